"""envflow's RQ worker: dequeues run jobs and executes each as a flow subprocess.

It is an RQ ``SimpleWorker``: RQ's forked work horse would be a redundant process per run,
since every run already is its own subprocess. RQ keeps doing what it does: dequeueing,
worker registration, executions and their registry, retries, stop commands, scheduling
of delayed jobs. envflow adds the run records, the flow process, streaming, and a short
lease so a dead worker's run is noticed in seconds.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from typing import Any

import redis
from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.utils import now as rq_now
from rq.worker import SimpleWorker, WorkerStatus

from envflow import keys
from envflow.jobs import SERIALIZER, RunJob, is_run_job
from envflow.models import RunState
from envflow.reaper import Reaper, reap_predecessor
from envflow.runstore import RunStore, now_text
from envflow.settings import Settings

from . import bookkeeping
from .env_cache import EnvCache
from .executor import Executor, Outcome
from .maintenance import Maintenance

log = logging.getLogger("envflow.worker")

PAUSED_POLL = 1.0  # seconds between checks while some of the worker's queues are paused


class FlowWorker(SimpleWorker):
    """Runs envflow flow runs, and refuses every other job without executing it."""

    log_job_description = False
    log_result_lifespan = False

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
        self.store = RunStore(connection, settings)
        self.reaper = Reaper(self.store)
        self.env_cache = EnvCache(settings)
        self.executor = Executor(name, settings, self.store, self.env_cache)
        self.maintenance = Maintenance(name, self.queue_names(), connection, self.reaper)
        self._paused: set[str] = set()
        self._paused_checked_at = 0.0

    # Lifecycle

    def register_birth(self) -> None:
        # The slot lock (worker/identity.py) proves the predecessor is dead: take it off RQ's
        # registry now rather than when its key expires.
        if self.predecessor is not None:
            dead = SimpleWorker.find_by_key(self.redis_worker_namespace_prefix + self.predecessor,
                                            connection=self.connection, serializer=SERIALIZER)
            if dead is not None and dead.death_date is None:
                dead.register_death()
        super().register_birth()

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        if self.predecessor is not None:
            for run_id, state in reap_predecessor(self.reaper, self.predecessor):
                log.warning("run %s left by %s, dead, which ran here before: %s", run_id[:8], self.predecessor, state)
        pruned = self.executor.prune_caches()
        if pruned:
            log.info("removed %d cached flow files unused for two weeks", pruned)
        self.maintenance.start()
        log.info("worker %s ready on queue(s) %s", self.name, ", ".join(self.queue_names()))

    def teardown(self) -> None:
        self.maintenance.close()
        self.executor.launcher.close()
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
        self.executor.stops.shutdown_at = time.monotonic() - self.settings.shutdown_grace
        self.executor.stops.request_shutdown()
        self._stop_requested = True
        if self.get_state() != WorkerStatus.BUSY:
            raise SystemExit(1)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        # RQ's stop-job command lands here (from its pubsub thread): cancel the running flow.
        self.executor.stops.request_cancel()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # RQ refreshes the worker's key (TTL: minutes) several times per job, three commands
        # each; once a second, in one round trip, keeps it just as alive.
        if pipeline is None:
            if timeout is None and self.last_heartbeat and (rq_now() - self.last_heartbeat).total_seconds() < 1:
                return
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(timeout, pipeline=pipe)
                pipe.execute()
            return
        super().heartbeat(timeout, pipeline=pipeline)

    # Dequeueing: RQ's, minus paused queues

    def _paused_queues(self) -> set[str]:
        now = time.monotonic()
        if now - self._paused_checked_at > PAUSED_POLL:
            try:
                self._paused = {n.decode() for n in self.connection.smembers(keys.PAUSED_QUEUES)}
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass  # keep the last known set; RQ's dequeue waits out the outage
            self._paused_checked_at = now
        return self._paused

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        while True:
            paused = self._paused_queues()
            active = [q for q in self.queues if q.name not in paused]
            self._ordered_queues = active
            if not active:
                if timeout is None:
                    return None  # burst mode: nothing we may run
                try:
                    self.heartbeat()
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                    log.warning("worker %s: cannot reach Redis (%s); retrying", self.name, e)
                time.sleep(PAUSED_POLL)  # a stop signal interrupts this (RQ raises StopRequested)
                continue
            if paused and timeout is not None:
                # Come back regularly to notice a resumed queue.
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=int(PAUSED_POLL))
                if result is None:
                    continue
            else:
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            if result is None:
                return None
            return result  # a queue paused while we waited on it is caught by the claim

    # Jobs

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._stopped_job_id = None
        self.executor.stops.reset()
        try:
            payload_ok = is_run_job(job.func_name, job.args, job.kwargs)
        except Exception:  # undecodable payload (not JSON)
            payload_ok = False
        if not payload_ok:
            self._refuse(job, queue)
            return
        execution, claim = bookkeeping.start(self, job, queue)
        self.perform_run(job, queue, execution, claim)

    def _refuse(self, job: Job, queue: Queue) -> None:
        log.error("refused job %s: its payload is not an envflow run; nothing was executed", job.id)
        execution = self.prepare_execution(job)
        job.retries_left = 0
        job.started_at = job.ended_at = rq_now()
        self.handle_job_failure(job, queue, exc_string="refused by envflow worker: not an envflow run job",
                                execution=execution)
        self.set_state(WorkerStatus.IDLE)

    def perform_run(self, job: Job, queue: Queue, execution: Any, claim: list[Any]) -> bool:
        run_id = job.args[0]
        status = claim[0].decode()
        if status != "ok":
            return self._skip(job, queue, execution, run_id, status, claim)
        attempt = int(claim[1])
        raw = claim[2:]
        fields = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
        log.info("run %s %s: started (attempt %d)", run_id[:8], fields.get("deployment"), attempt)
        self.executor.heartbeat_extra = lambda pipe: self._rq_heartbeat(job, execution, pipe)
        outcome = self.executor.execute(run_id, attempt, fields)
        job.ended_at = rq_now()
        self._record(job, queue, execution, run_id, attempt, fields, outcome)
        return outcome.state is RunState.COMPLETED

    def _rq_heartbeat(self, job: Job, execution: Any, pipe: Any) -> None:
        ttl = self.get_heartbeat_ttl(job)
        self.heartbeat(ttl, pipeline=pipe)
        execution.heartbeat(job.started_job_registry, ttl, pipeline=pipe)

    def _skip(self, job: Job, queue: Queue, execution: Any, run_id: str, status: str, claim: list) -> bool:
        """The job's run cannot start here: it ended, vanished, or another live worker has it."""
        detail = claim[1].decode() if len(claim) > 1 else ""
        log.info("run %s: not started (%s %s)", run_id[:8], status, detail)
        if status == "paused":
            self._paused_checked_at = 0.0
            bookkeeping.put_back(self, job, queue, execution)
            return False
        if status == "busy":
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                pipe.execute()
            return False
        job.ended_at = rq_now()
        self.handle_job_success(job, queue, queue.started_job_registry, execution)
        return False

    def _record(
        self, job: Job, queue: Queue, execution: Any, run_id: str, attempt: int, fields: dict[str, str], o: Outcome
    ) -> None:
        """Write the attempt's outcome to the run, then let RQ finish (or retry) the job."""
        if o.lost:
            log.warning("run %s attempt %d: taken over elsewhere; not recording its end here", run_id[:8], attempt)
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                pipe.execute()
            return
        retrying = o.state in (RunState.FAILED, RunState.TIMED_OUT) and job.should_retry
        delay = job.get_retry_interval() if retrying else 0
        next_state = o.state if not retrying else (RunState.SCHEDULED if delay else RunState.PENDING)
        now = time.time()
        attempt_record = {
            "n": attempt,
            "worker": self.name,
            "started_at": float(fields.get("attempt_started_at") or now),
            "ended_at": round(now, 6),
            "state": o.state.value,
            "exit_code": o.exit_code,
            "error_type": o.error_type,
            "error": o.error,
            "reason": o.reason,
        }
        values = {
            "exit_code": "" if o.exit_code is None else str(o.exit_code),
            "result": o.result or "",
            "result_error": o.result_error or "",
            "error_type": o.error_type or "",
            "error": o.error or "",
            "reason": o.reason or "",
        }
        if retrying and delay:
            values["scheduled_for"] = now_text(now + delay)
        args: list[Any] = [
            attempt,
            next_state.value,
            now_text(now),
            0 if retrying else 1,
            json.dumps(attempt_record),
            self.settings.history_ttl,
            self.settings.run_ttl,
        ]
        for name, value in values.items():
            args += [name, value]
        if o.state is RunState.COMPLETED:
            self._with_redis_retries(run_id, lambda: bookkeeping.complete(self, job, execution, run_id, args))
        else:
            self._with_redis_retries(run_id, lambda: self.store.scripts.finish(
                keys=bookkeeping.finish_keys(run_id), args=args))
        elapsed = now - float(fields.get("attempt_started_at") or now)
        log.info(
            "run %s: %s in %.2fs%s",
            run_id[:8],
            o.state.value,
            elapsed,
            f" ({o.error_type + ': ' if o.error_type else ''}{o.error or o.reason})" if (o.error or o.reason) else "",
        )
        if o.state is RunState.COMPLETED:
            return
        if o.state is RunState.CANCELLED:
            self._stopped_job_id = job.id  # RQ marks it STOPPED and does not retry it
        elif not retrying:
            job.retries_left = 0
        self.handle_job_failure(job, queue, exc_string=f"{o.state.value}: {o.error or o.reason}", execution=execution)

    def _with_redis_retries(self, run_id: str, write: Any) -> None:
        """Record an attempt's end, waiting out a Redis outage: the outcome must not be lost.
        Safe to repeat: the finish script is a no-op once the attempt has ended."""
        delay = 0.1
        while True:
            try:
                write()
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                log.warning("run %s: cannot record its end yet (%s); retrying", run_id[:8], e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
