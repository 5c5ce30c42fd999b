"""Finding runs whose worker died, and ending (or retrying) them.

A running attempt holds a lease (``envflow:run:<id>:lease``) that its worker renews every
``heartbeat_interval``; it expires ``lease_ttl`` after the last renewal. A RUNNING run with
no lease lost its worker. The reaper hands the RQ job to RQ's own abandoned-job handling
(``StartedJobRegistry.cleanup``: retry if retries are left, else fail), after expiring that
job's execution there, then records the outcome on the run (``lua/crash.lua``).

Reaping is idempotent and safe to run anywhere, any number of times at once: the
scheduler does it on a timer, a starting worker does it at once, and a caller waiting on
a run does it for that run when the run goes quiet. The same periodic pass keeps the state
indexes trimmed as runs expire (``indexes.py``).
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from .. import waits
from ..settings import Settings
from ..waits import Waiting
from . import keys, routing
from .indexes import IndexMaintenance
from .jobs import SERIALIZER, Queues, RunJob
from .protocol import RunScripts

log = logging.getLogger("envflow.store.reaper")

REAPER_LOCK = keys.REAPER_LOCK


class Reaper:
    def __init__(self, redis: Redis, settings: Settings, scripts: RunScripts | None = None,
                 queues: Queues | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts or RunScripts(redis, settings)
        self.queues = queues or Queues(redis)
        self.indexes = IndexMaintenance(redis, settings.run_ttl)

    def reap(self, skip_worker: str | None = None) -> list[tuple[str, str]]:
        """One pass: end RUNNING runs that lost their worker, and requeue PENDING runs whose job
        got stuck between queue and worker. Returns ``(run_id, new_state)`` for each run changed.

        :param skip_worker: a live worker's own name: its runs are alive by definition.
        """
        changed = []
        for raw in self.redis.zrange(keys.ACTIVE_RUNS, 0, -1):
            state = self.check_run(raw.decode(), skip_worker=skip_worker)
            if state:
                changed.append((raw.decode(), state))
        for run_id in self.rescue_pending():
            changed.append((run_id, "PENDING"))
        for run_id in self.fail_unrunnable():
            changed.append((run_id, "FAILED"))
        self.fire_late()
        return changed

    def fire_late(self, limit: int = 200) -> list[str]:
        """Fire the LATE event of the waiting runs that have not started ``late_after`` seconds after they
        were due (``lua/late.lua``, once per run); the runs found late."""
        late = []
        for raw in self.redis.zrangebyscore(keys.LATE_RUNS, "-inf", time.time(), start=0, num=limit):
            if self.scripts.late(raw.decode()).run():
                log.warning("run %s is late: not started late_after seconds after it was due", raw.decode()[:8])
                late.append(raw.decode())
        return late

    def fail_unrunnable(self, limit: int = 200) -> list[str]:
        """Say why waiting runs wait (``waits.py``), and FAIL those that every live worker of their queue lacks
        the env of, once that has lasted ``ENVFLOW_ENV_WAIT`` seconds: with the error those workers give."""
        wait = self.settings.env_wait
        now = time.time()
        failed = []
        known: dict[tuple[str, str | None], Waiting | None] = {}
        for raw in self.redis.zrange(keys.PENDING_RUNS, 0, limit - 1):
            run_id = raw.decode()
            state, queue, route, stored = (v.decode() if v else None for v in self.redis.hmget(
                keys.run(run_id), "state", "queue", "route", waits.FIELD))
            if state != "PENDING" or not queue:
                continue
            if (queue, route) not in known:
                known[(queue, route)] = routing.waiting_for(self.redis, queue, route)
            waiting = known[(queue, route)]
            if waiting is None:
                if getattr(Waiting.from_json(stored), "kind", None) in (waits.NO_WORKER, waits.ENV):
                    self.scripts.note_waiting([run_id], None).run()  # stale: a worker that can take it is live
                continue
            self.scripts.note_waiting([run_id], waiting).run()
            since = getattr(Waiting.from_json(stored), "since", None) or now
            if waiting.kind != waits.ENV or wait is None or now - since < wait:
                continue
            errors = waiting.details.get("errors") or {}
            why = next(iter(errors.values()), waiting.message)
            reason = (f"{why} (no live worker of queue {queue} has {route}; it waited {now - since:.0f}s, "
                      f"ENVFLOW_ENV_WAIT={wait:g})")
            if self.scripts.unrunnable(run_id, reason).run():
                job = self._job(run_id)
                if job is not None:
                    try:
                        job.cancel()
                    except InvalidJobOperation:
                        pass
                log.warning("run %s: %s", run_id[:8], reason)
                failed.append(run_id)
        return failed

    def reap_shared(self, holder: str) -> list[tuple[str, str]]:
        """One :meth:`reap` pass per ``reaper_interval`` cluster-wide, whoever calls it, then the indexes'
        upkeep (``IndexMaintenance.maintain``)."""
        ttl_ms = max(int(self.settings.reaper_interval * 900), 1)
        if not self.redis.set(REAPER_LOCK, holder, nx=True, px=ttl_ms):
            return []
        changed = self.reap(skip_worker=holder)
        self.indexes.maintain(holder)
        return changed

    def check_run(
        self,
        run_id: str,
        reason: str = "worker lost: no heartbeat within the lease",
        skip_worker: str | None = None,
    ) -> str | None:
        """Reap one run if its attempt lost its worker; return the run's new state, else None."""
        state, attempt, worker = self.redis.hmget(keys.run(run_id), "state", "attempt", "worker")
        if state is None:
            self.redis.zrem(keys.ACTIVE_RUNS, run_id)
            return None
        if state != b"RUNNING" or attempt is None or self.redis.exists(keys.lease(run_id)):
            return None
        if skip_worker is not None and worker is not None and worker.decode() == skip_worker:
            return None
        job = self._job(run_id)
        will_retry = job is not None and bool(job.retries_left)
        # Decide first (atomically: the lease must still be missing), then tell RQ.
        crashed = self.scripts.crash(run_id, int(attempt), will_retry, reason).run()
        if crashed is None:
            return None
        new_state = crashed.value
        if job is not None:
            self._abandon_job(job, job.origin)  # the RQ queue it waited in (its env's sub-queue, say)
        log.warning("run %s attempt %s: %s -> %s", run_id[:8], attempt.decode(), reason, new_state)
        return new_state

    def _job(self, run_id: str) -> Job | None:
        try:
            return RunJob.fetch(run_id, connection=self.redis, serializer=SERIALIZER)
        except NoSuchJobError:
            return None

    def _abandon_job(self, job: Job, queue_name: str) -> None:
        """Hand the job to RQ's abandoned-job handling: it retries it if retries are left, else fails it."""
        registry = StartedJobRegistry(queue_name, connection=self.redis, serializer=SERIALIZER, job_class=RunJob)
        members = [m for m, _ in self.redis.zscan_iter(registry.key, match=f"{job.id}:*")]
        if members:
            # Expire just this job's executions, then run RQ's own cleanup on them.
            self.redis.zadd(registry.key, {m: 0 for m in members}, xx=True)
            registry.cleanup(timestamp=time.time() - self.settings.lease_ttl)
        elif job.get_status() == JobStatus.STARTED:
            # The worker died before RQ recorded the execution: retry or fail the job as RQ would.
            queue = self.queues.get(queue_name)
            with self.redis.pipeline() as pipe:
                if job.retries_left:
                    job.retry(queue, pipe)
                else:
                    record_job_failure(job, "AbandonedJobError: its worker died", pipe)
                pipe.execute()

    def rescue_pending(self, limit: int = 200) -> list[str]:
        """Requeue PENDING runs whose job no worker holds any more.

        A worker killed between taking a job off the queue and claiming its run leaves the
        job in RQ's intermediate list (or, for multi-queue workers, nowhere) or marked
        started with no one running it. Such a run waits forever; put its job back at the
        front of its queue. Only runs pending longer than twice the lease are examined, and a
        job out of its queue only once RQ's first-seen mark on it is a lease old (a live
        worker moves it on within milliseconds); a live worker that claims late anyway is
        harmless: the claim script lets only one attempt run. A run parked by a full limit is
        left alone: its job is out of the queue until a slot frees (``lua/_limits.lua``).
        """
        cutoff = time.time() - 2 * self.settings.lease_ttl
        rescued = []
        for raw in self.redis.zrangebyscore(keys.PENDING_RUNS, "-inf", cutoff, start=0, num=limit):
            run_id = raw.decode()
            state, parked_on = self.redis.hmget(keys.run(run_id), "state", "parked_on")
            if state not in (b"PENDING", b"SCHEDULED"):
                self.redis.zrem(keys.PENDING_RUNS, run_id)
                continue
            if parked_on is not None:
                continue  # out of its queue by design: the script that frees a slot of its limit wakes it
            job = self._job(run_id)
            if job is None:
                continue  # its record expired with the job: nothing left to run
            queue = self.queues.get(job.origin)
            if not self._stuck(job, queue):
                continue
            with self.redis.pipeline() as pipe:
                registry = queue.started_job_registry
                for member, _ in self.redis.zscan_iter(registry.key, match=f"{run_id}:*"):
                    pipe.zrem(registry.key, member)
                pipe.lrem(queue.intermediate_queue_key, 0, run_id)
                pipe.delete(queue.intermediate_queue.get_first_seen_key(run_id))
                job.set_status(JobStatus.QUEUED, pipeline=pipe)
                queue.push_job_id(run_id, pipeline=pipe, at_front=True)
                pipe.zadd(keys.PENDING_RUNS, {run_id: time.time()})
                pipe.execute()
            log.warning("run %s: its job was stuck between queue and worker; put back on queue %s",
                        run_id[:8], queue.name)
            rescued.append(run_id)
        return rescued

    def _stuck(self, job: Job, queue: Queue) -> bool:
        """Whether a waiting run's job is held by nobody: out of its queue for a lease, or started
        but never claimed for a lease."""
        status = job.get_status()
        if status == JobStatus.SCHEDULED:
            return False
        if status == JobStatus.QUEUED:
            if self.redis.lpos(queue.key, job.id) is not None:
                return False
            marks = queue.intermediate_queue
            if marks.set_first_seen(job.id):
                return False  # first sighting: look again next pass
            first_seen = marks.get_first_seen(job.id)
            return first_seen is not None and time.time() - first_seen.timestamp() > self.settings.lease_ttl
        if status == JobStatus.STARTED:
            started = job.started_at.timestamp() if job.started_at else 0.0
            return time.time() - started > self.settings.lease_ttl
        return True


class PeriodicReaper:
    """Runs :meth:`Reaper.reap` every ``reaper_interval`` seconds in a daemon thread.

    Any number of processes may run one; a short Redis lock makes one pass per interval
    happen cluster-wide. Redis outages are logged and retried at the next interval.
    """

    def __init__(self, reaper: Reaper, name: str) -> None:
        import threading

        self.reaper = reaper
        self.name = name
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="envflow-reaper", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        import redis

        interval = self.reaper.settings.reaper_interval
        while not self.stop.wait(interval):
            try:
                self.reaper.reap_shared(self.name)
            except redis.exceptions.RedisError as e:
                log.warning("reaper pass failed: %s", e)
            except Exception:
                log.exception("reaper pass failed")


def reap_predecessor(reaper: Reaper, worker_name: str) -> list[tuple[str, str]]:
    """Reap the runs a dead worker left, known dead (its slot lock was free): whether or not their
    leases have lapsed yet."""
    reaped = []
    for raw in reaper.redis.zrange(keys.ACTIVE_RUNS, 0, -1):
        run_id = raw.decode()
        holder = reaper.redis.hget(keys.run(run_id), "worker")
        if holder is None or holder.decode() != worker_name:
            continue
        lease = reaper.redis.get(keys.lease(run_id))
        if lease is not None and lease.decode() == worker_name:
            reaper.redis.delete(keys.lease(run_id))
        state = reaper.check_run(run_id, reason=f"worker {worker_name} died and was restarted")
        if state:
            reaped.append((run_id, state))
    return reaped
