"""envflow's RQ worker: dequeues run jobs and executes each as a flow subprocess.

It is an RQ ``SimpleWorker``: RQ's forked work horse would be a redundant process per run,
since every run already is its own subprocess. RQ keeps doing what it does: dequeueing,
worker registration, executions and their registry, retries, stop commands, scheduling
of delayed jobs. envflow adds the run records, the flow process, streaming, and a short
lease so a dead worker's run is noticed in seconds.

This class is envflow's one seam to RQ's worker: everything that touches RQ's internals is
here, written against rq 3.0.0's ``rq/worker/base.py`` (``prepare_execution``,
``prepare_job_execution``, ``handle_job_success``, ``handle_job_failure``,
``dequeue_job_and_maintain_ttl``). The executor it drives knows nothing of RQ.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis import Redis
from rq import worker_registration
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import as_text, utcformat
from rq.utils import now as rq_now
from rq.worker import SimpleWorker, WorkerStatus

from envflow.backoff import Backoff
from envflow.connection import TRANSIENT_ERRORS, OutOfMemoryError
from envflow.models import RunState
from envflow.settings import Settings
from envflow.store import keys, routing
from envflow.store.jobs import SERIALIZER, RunJob, is_run_job
from envflow.store.protocol import Claimed, Ending, NotClaimed, RunScripts
from envflow.store.reaper import Reaper, reap_predecessor

from . import identity
from .env_cache import EnvCache
from .executor import Executor
from .maintenance import Maintenance
from .outcome import Outcome, ending
from .presence import Presence

log = logging.getLogger("envflow.worker")

T = TypeVar("T")
LOGGED_ERROR_CHARS = 2000  # of a run's error, in the worker's log line
PAUSED_POLL = 1.0  # seconds between checks while some of the worker's queues are paused
ROUTE_POLL = 2  # seconds a dequeue waits before looking at its envs again, when no wake-up (FlowQueue) came


class FlowQueue(Queue):
    """RQ's queue, whose blocking pop also ends when the worker's wake-up list gets an entry (its
    envs changed, ``worker/presence.py``): the dequeue then returns nothing, and the worker listens
    on its new set of queues at once rather than when its wait times out."""

    @classmethod
    def lpop(cls, queue_keys: Any, timeout: int | None, connection: Redis | None = None) -> Any:
        result = super().lpop(queue_keys, timeout, connection=connection)
        if result is not None and as_text(result[0]).startswith(cls.redis_queue_namespace_prefix + routing.WAKE):
            return None
        return result


class FlowWorker(SimpleWorker):
    """Runs envflow flow runs, and refuses every other job without executing it."""

    log_job_description = False
    log_result_lifespan = False
    queue_class = FlowQueue

    def __init__(
        self,
        queues: list[str],
        *,
        name: str,
        connection: Redis,
        settings: Settings,
        predecessor: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(queues, name=name, connection=connection, serializer=SERIALIZER, job_class=RunJob, **kwargs)
        self.settings = settings
        self.predecessor = predecessor  # a dead worker that held this worker's slot (worker/identity.py)
        self.scripts = RunScripts(connection, settings)
        self.reaper = Reaper(connection, settings)
        self.executor = Executor(name, settings, self.scripts, EnvCache(settings, redis=connection))
        self.presence = Presence(name, self.queue_names(), connection, settings, self.executor.pool)
        self.maintenance = Maintenance(name, self.queue_names(), connection, self.reaper, self.presence)
        self._paused: set[str] | None = None  # None until first read: until then, RQ's dequeue is not entered
        self._paused_checked_at = 0.0
        self._base_queues = list(self.queues)  # the queues it was given; sub-queues of their envs join them
        self._routes: frozenset[str] = frozenset()
        self._wake = FlowQueue(routing.wake_queue(name), connection=connection, serializer=SERIALIZER)

    # Lifecycle

    def register_birth(self) -> None:
        # The slot (worker/identity.py) names the predecessor; once it is proven dead, take it off
        # RQ's registry now rather than when its key expires.
        if self.predecessor is not None and not self._predecessor_dead(self.predecessor):
            log.warning("not reaping the runs of %s, named by this worker's slot file: it is not proven dead "
                        "(still running, or its leases still renewed); its leases decide", self.predecessor)
            self.predecessor = None
        if self.predecessor is not None:
            dead = SimpleWorker.find_by_key(self.redis_worker_namespace_prefix + self.predecessor,
                                            connection=self.connection, serializer=SERIALIZER)
            if dead is not None and dead.death_date is None:
                dead.register_death()
        super().register_birth()
        stamp: dict[str | bytes, str] = dict(identity.process_stamp().items())  # what proves this worker dead later
        self.connection.hset(self.key, mapping=stamp)

    def _predecessor_dead(self, name: str) -> bool:
        """Whether the worker ``name`` is gone, from what it recorded in Redis (a slot file, which
        flows can write, only names it): no record left, a recorded death, or a stamp that no live
        process matches; else, when this process cannot check the stamp (another container), no
        lease of its runs renewed over a heartbeat period."""
        fields = {k.decode(): v.decode() for k, v in
                  self.connection.hgetall(self.redis_worker_namespace_prefix + name).items()}
        if not fields or fields.get("death"):
            return True
        alive = identity.stamp_alive(fields)
        if alive is not None:
            return not alive
        held = [keys.lease(r.decode()) for r in self.connection.zrange(keys.ACTIVE_RUNS, 0, -1)
                if self.connection.get(keys.lease(r.decode())) == name.encode()]
        # A lease's TTL only falls, unless its holder renews it: watch for a rise over a heartbeat period.
        last = {lease: self.connection.pttl(lease) for lease in held}
        deadline = time.monotonic() + min(self.settings.heartbeat_interval * 1.5 + 0.5, self.settings.lease_ttl)
        while held and time.monotonic() < deadline:
            time.sleep(0.05)
            for lease, before in last.items():
                now = self.connection.pttl(lease)
                if now > before:
                    return False
                last[lease] = now
        return True

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        if self.predecessor is not None:
            for run_id, state in reap_predecessor(self.reaper, self.predecessor):
                log.warning("run %s left by %s, dead, which ran here before: %s", run_id[:8], self.predecessor, state)
        pruned = self.executor.sources.prune()
        if pruned:
            log.info("removed %d cached flow files unused for two weeks", pruned)
        try:
            self.presence.refresh()  # warm=True deployments' envs start warming now
        except redis.exceptions.RedisError as e:
            log.warning("cannot publish this worker's state yet: %s", e)
        self.maintenance.start()
        log.info("worker %s ready on queue(s) %s", self.name, ", ".join(self.queue_names()))

    def teardown(self) -> None:
        self.maintenance.close()
        self.executor.pool.close()
        super().teardown()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # RQ's own view of the execution outlives envflow's lease, so RQ never declares a
        # job abandoned before envflow's reaper has (that one expires it explicitly).
        return int(self.settings.lease_ttl) + 60

    def handle_warm_shutdown_request(self) -> None:
        log.info(
            "worker %s stopping: no new runs; a running flow gets %gs to finish",
            self.name,
            self.settings.shutdown_grace,
        )
        self.executor.stops.request_shutdown()

    def request_force_stop(self, signum: int, frame: Any) -> None:
        # A second Ctrl-C / SIGTERM: stop the running flow now, record it, then exit.
        log.warning("worker %s: forced stop", self.name)
        self.executor.stops.force_shutdown(self.settings.shutdown_grace)
        self._stop_requested = True  # RQ's own flag: take no new job
        if self.get_state() != WorkerStatus.BUSY:
            raise SystemExit(1)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        # Every RQ path that stops a job's work (stop-job and stop-execution commands, from RQ's
        # pubsub thread) lands here; the flow process is this worker's work horse: cancel it.
        self.executor.stops.request_cancel()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # RQ refreshes the worker's key (TTL: minutes) several times per job, three commands
        # each; once a second, in one round trip, keeps it just as alive.
        if pipeline is None:
            if timeout is None and self.last_heartbeat and (rq_now() - self.last_heartbeat).total_seconds() < 1:
                return
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(timeout, pipeline=pipe)
                pipe.sismember(worker_registration.REDIS_WORKER_KEYS, self.key)
                try:
                    registered = pipe.execute()[-1]
                except OutOfMemoryError as e:  # refused, not lost: the next beat tries again
                    log.warning("worker %s: Redis refused its heartbeat (%s); retrying", self.name, e)
                    return
            if not registered:
                self._register_again()
            return
        super().heartbeat(timeout, pipeline=pipeline)

    def _register_again(self) -> None:
        """Redis lost this worker's registration (flushed, or restarted without its data): register
        again, as RQ's ``register_birth`` does, so that ``worker health`` and the fleet see it."""
        log.warning("worker %s: not registered in Redis any more (its data was lost?); registering again", self.name)
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    # Dequeueing: RQ's, minus paused queues

    def _paused_queues(self) -> set[str] | None:
        now = time.monotonic()
        if now - self._paused_checked_at > PAUSED_POLL:
            try:
                self._paused = {n.decode() for n in self.connection.smembers(keys.PAUSED_QUEUES)}
            except TRANSIENT_ERRORS:
                pass  # keep the last known set; RQ's dequeue waits out the outage
            self._paused_checked_at = now
        return self._paused

    def _follow_routes(self) -> None:
        """Listen on the sub-queues of the envs this worker has (``envflow/store/routing.py``), as they change."""
        routes = self.presence.routes
        if routes == self._routes:
            return
        self._routes = routes
        names = [routing.rq_queue(q.name, key) for q in self._base_queues for key in sorted(routes)]
        queues = [*self._base_queues, *(self.queue_class(name, connection=self.connection,
                                                          job_class=self.job_class, serializer=self.serializer)
                                        for name in names)]
        self._register_queues(queues)
        shown = sorted(self.presence.envs) or sorted(routes)  # each built env by its requirements
        log.info("worker %s takes runs for %d env(s): %s", self.name, len(shown), ", ".join(shown) or "-")

    def _register_queues(self, queues: list[Queue]) -> None:
        """Listen on ``queues``, registered under each of them as RQ registers a worker at birth
        (``rq:workers:<queue>`` and the worker's ``queues`` field), so RQ's own tools (``rq info``,
        rq-dashboard) see this worker on its envs' sub-queues too."""
        with self.connection.pipeline() as pipe:
            worker_registration.unregister(self, pipeline=pipe)
            self.queues = queues
            worker_registration.register(self, pipeline=pipe)
            pipe.hset(self.key, "queues", ",".join(self.queue_names()))
            try:
                pipe.execute()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                log.warning("worker %s: cannot register its queues yet (%s)", self.name, e)

    # RQ runs these two at the top of its loop (maintenance first at start), outside its own outage
    # handling: an outage there must not end the worker; the dequeue below waits it out.
    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            log.warning("worker %s: cannot reach Redis (%s); retrying", self.name, e)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except TRANSIENT_ERRORS as e:  # RQ's registry cleaning: it comes round again
            log.warning("worker %s: registry maintenance could not reach Redis (%s); retrying", self.name, e)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        while True:
            self._follow_routes()
            paused = self._paused_queues()  # None: Redis not reached yet, so wait here as if all were paused
            active = [] if paused is None else [q for q in self.queues if routing.user_queue(q.name) not in paused]
            self._ordered_queues = [*active, self._wake] if active else []  # RQ's list of what it dequeues from
            if not active:
                if timeout is None:
                    return None  # burst mode: nothing we may run
                try:
                    self.heartbeat()
                except TRANSIENT_ERRORS as e:
                    log.warning("worker %s: cannot reach Redis (%s); retrying", self.name, e)
                time.sleep(PAUSED_POLL)  # a stop signal interrupts this (RQ raises StopRequested)
                continue
            try:
                if timeout is not None:
                    # Come back regularly to notice a resumed queue, or envs that appeared or went.
                    result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=int(PAUSED_POLL if paused
                                                                                           else ROUTE_POLL))
                    if result is None:
                        continue
                else:
                    result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except OutOfMemoryError as e:  # before any pop: RQ's state and heartbeat writes
                log.warning("worker %s: Redis refuses writes (%s); waiting", self.name, e)
                time.sleep(PAUSED_POLL)
                continue
            return result  # None, or a job (a queue paused while we waited on it is caught by the claim)

    # Jobs

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._stopped_job_id = None  # RQ's mark of a job stopped on request
        self.executor.stops.reset()
        try:
            payload_ok = is_run_job(job.func_name, job.args, job.kwargs)
        except Exception:  # undecodable payload (not JSON)
            payload_ok = False
        if not payload_ok:
            self._refuse(job, queue)
            return
        execution, claim = self._start(job, queue)
        if isinstance(claim, NotClaimed):
            self._skip(job, queue, execution, claim)
            return
        log.info("run %s %s: started (attempt %d)", claim.run.id[:8], claim.run.deployment, claim.attempt)
        outcome = self.executor.execute(claim, on_heartbeat=lambda pipe: self._rq_heartbeat(job, execution, pipe))
        job.ended_at = rq_now()
        self._record(job, queue, execution, claim, outcome)
        self.executor.prepare_next()

    def _refuse(self, job: Job, queue: Queue) -> None:
        log.error("refused job %s: its payload is not an envflow run; nothing was executed", job.id)
        execution = self.prepare_execution(job)
        job.retries_left = 0
        job.started_at = job.ended_at = rq_now()
        self.handle_job_failure(job, queue, exc_string="refused by envflow worker: not an envflow run job",
                                execution=execution)
        self.set_state(WorkerStatus.IDLE)

    def _start(self, job: Job, queue: Queue) -> tuple[Execution, Claimed | NotClaimed]:
        """Record the job as started and claim its run; the job is already popped, so a Redis out of
        memory is waited out (a refused write changed nothing: the claim's first write is refused)."""
        return self._until_accepted(f"run {job.id[:8]}: cannot start it", lambda: self._try_start(job, queue))

    def _until_accepted(self, what: str, write: Callable[[], T]) -> T:
        """``write()``, again after a pause for as long as Redis refuses writes for want of memory."""
        backoff = Backoff(cap=5.0)
        while True:
            try:
                return write()
            except OutOfMemoryError as e:
                if self._stop_requested:
                    raise
                log.warning("%s yet: Redis refuses writes (%s); retrying", what, e)
                time.sleep(backoff.next())

    def _try_start(self, job: Job, queue: Queue) -> tuple[Execution, Claimed | NotClaimed]:
        """Record the job as started, as RQ's ``prepare_execution`` and ``prepare_job_execution`` do,
        and claim its run, in one round trip."""
        ttl = self.get_heartbeat_ttl(job)
        claim = self.scripts.claim(job.args[0], self.name, routing.user_queue(queue.name))
        with self.connection.pipeline() as pipe:
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            job.heartbeat(rq_now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            if len(self.queues) == 1:
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            claim.queue(pipe)
            results = pipe.execute(raise_on_error=False)
        return execution, claim.result(results[-1])

    def _rq_heartbeat(self, job: Job, execution: Execution, pipe: Any) -> None:
        ttl = self.get_heartbeat_ttl(job)
        self.heartbeat(ttl, pipeline=pipe)
        execution.heartbeat(job.started_job_registry, ttl, pipeline=pipe)

    def _skip(self, job: Job, queue: Queue, execution: Execution, claim: NotClaimed) -> None:
        """The job's run cannot start here: it ended, vanished, its queue is paused, a limit of it is
        full, or another live worker has it."""
        log.info("run %s: not started (%s %s)", job.id[:8], claim.status, claim.detail)
        if claim.status == "limited":
            self._park(job, execution)
        elif claim.status == "paused":
            self._paused_checked_at = 0.0
            self._put_back(job, queue, execution)
        elif claim.status == "busy":
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                pipe.execute()
        else:
            job.ended_at = rq_now()
            self.handle_job_success(job, queue, queue.started_job_registry, execution)

    def _put_back(self, job: Job, queue: Queue, execution: Execution) -> None:
        """Undo a start: the job's queue was paused meanwhile; return the job, untouched, to its front."""
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            job.set_status(JobStatus.QUEUED, pipeline=pipe)
            queue.push_job_id(job.id, pipeline=pipe, at_front=True)
            pipe.execute()

    def _park(self, job: Job, execution: Execution) -> None:
        """Undo a start, leaving the job out of its queue: the claim parked its run until a slot of
        its limit frees (and marked its job queued again); the script that frees the slot puts the
        job back at its queue's front."""
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            pipe.execute()

    def _record(self, job: Job, queue: Queue, execution: Execution, claim: Claimed, outcome: Outcome) -> None:
        """Write the attempt's outcome to the run, then let RQ finish (or retry) the job."""
        run_id = claim.run.id
        if outcome.lost:
            log.warning("run %s attempt %d: taken over elsewhere; not recording its end here", run_id[:8],
                        claim.attempt)
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                pipe.execute()
            return
        if outcome.env_gone and self._give_back(job, queue, execution, claim, outcome):
            return
        retry_in = float(job.get_retry_interval()) if job.should_retry else None
        end = ending(outcome, claim.attempt, self.name, claim.started_at, retry_in)
        if outcome.state is RunState.COMPLETED:
            self._ride_out(run_id, lambda: self._complete(job, execution, run_id, end))
        else:
            if outcome.state is RunState.CANCELLED:
                self._stopped_job_id = job.id  # RQ marks it STOPPED and does not retry it
            elif end.next_state.is_final:
                job.retries_left = 0
            failure = f"{outcome.state.value}: {(outcome.error or outcome.reason or '')[:LOGGED_ERROR_CHARS]}"
            retries_left = job.retries_left
            self._ride_out(run_id, lambda: self._fail(job, queue, execution, run_id, end, failure, retries_left))
        detail = f"{outcome.error_type + ': ' if outcome.error_type else ''}{outcome.error or outcome.reason}"
        if len(detail) > LOGGED_ERROR_CHARS:  # the whole text is in the run's record
            detail = f"{detail[:LOGGED_ERROR_CHARS]}... ({len(detail):,} characters)"
        took = (end.attempt.ended_at or time.time()) - claim.started_at
        log.info("run %s: %s in %.2fs%s", run_id[:8], outcome.state.value, took,
                 f" ({detail})" if (outcome.error or outcome.reason) else "")

    def _give_back(self, job: Job, queue: Queue, execution: Execution, claim: Claimed, outcome: Outcome) -> bool:
        """The run's env, advertised here, is gone: stop taking its runs, and return this one to wait for a
        worker that has it (its attempt does not count). False when the attempt was no longer this worker's."""
        run_id = claim.run.id
        self.presence.lost(claim.run.route or "")
        self._follow_routes()
        if not self.scripts.release(run_id, claim.attempt, self.name).run():
            return False
        log.warning("run %s: its env is gone from this worker (%s); back to wait for a worker that has it",
                    run_id[:8], outcome.error)
        self._put_back(job, queue, execution)
        return True

    def _complete(self, job: Job, execution: Execution, run_id: str, end: Ending) -> None:
        """Record a COMPLETED attempt on the run and finish its job as RQ's ``handle_job_success`` does
        for a job without dependents, repeats or rate limits (envflow creates none), in one round trip."""
        finish = self.scripts.finish(run_id, end)
        with self.connection.pipeline() as pipe:
            finish.queue(pipe)
            self.increment_successful_job_count(pipeline=pipe)
            self.increment_total_working_time(job.ended_at - job.started_at, pipe)  # type: ignore[operator]
            # As job._handle_success, minus the Result stream: the run record holds the outcome, and a
            # per-job results stream would double Redis memory per run for the job's lifetime.
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            job.set_status(JobStatus.FINISHED, pipeline=pipe)
            job._status = JobStatus.FINISHED  # what set_status does outside a pipeline
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            if result_ttl == 0:
                # What job.cleanup(0) deletes, in this round trip (it would first read the job's status
                # and executions, two more); envflow's jobs have no dependents, results or group.
                pipe.delete(job.key)
            else:
                pipe.hset(job.key, "ended_at", utcformat(job.ended_at))  # type: ignore[arg-type]
                job.finished_job_registry.add(job, result_ttl, pipe)
                job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
            results = pipe.execute(raise_on_error=False)
        finish.result(results[0])

    def _fail(self, job: Job, queue: Queue, execution: Execution, run_id: str, end: Ending, failure: str,
              retries_left: int | None) -> None:
        """Record a failed, timed-out or cancelled attempt on the run and hand its job to RQ as RQ's
        ``handle_job_failure`` does for a job without dependents, webhooks or rate limits (envflow
        creates none), in one round trip. Safe to repeat: the job's retry count is set again first."""
        job.retries_left = retries_left
        finish = self.scripts.finish(run_id, end)
        with self.connection.pipeline() as pipe:
            finish.queue(pipe)
            stopped = self._stopped_job_id == job.id
            retry = job.should_retry and not stopped
            if stopped:
                job.set_status(JobStatus.STOPPED, pipeline=pipe)
            elif not retry:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            if not retry:
                job._handle_failure(failure, pipeline=pipe, worker_name=self.name, execution_id=execution.id,
                                    execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
            self.increment_failed_job_count(pipe)
            if job.started_at and job.ended_at:
                self.increment_total_working_time(job.ended_at - job.started_at, pipe)
            if retry:
                job.retry(queue, pipe)
            results = pipe.execute(raise_on_error=False)
        if stopped:
            self._stopped_job_id = None
        finish.result(results[0])

    def _ride_out(self, run_id: str, write: Callable[[], object]) -> None:
        """Record an attempt's end, waiting out a Redis outage: the outcome must not be lost.
        Safe to repeat: the finish script is a no-op once the attempt has ended."""
        backoff = Backoff(cap=5.0)
        while True:
            try:
                write()
                return
            except TRANSIENT_ERRORS as e:
                log.warning("run %s: cannot record its end yet (%s); retrying", run_id[:8], e)
                time.sleep(backoff.next())
