"""Finding runs whose worker died, and ending (or retrying) them.

A running attempt holds a lease (``envflow:run:<id>:lease``) that its worker renews every
``heartbeat_interval``; it expires ``lease_ttl`` after the last renewal. A RUNNING run with
no lease lost its worker. The reaper hands the RQ job to RQ's own abandoned-job handling
(``StartedJobRegistry.cleanup``: retry if retries are left, else fail), after expiring that
job's execution there, then records the outcome on the run (``lua/crash.lua``).

Reaping is idempotent and safe to run anywhere, any number of times at once: the
scheduler does it on a timer, a starting worker does it at once, and a caller waiting on
a run does it for that run when the run goes quiet.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from . import keys
from .jobs import SERIALIZER
from .runstore import RunStore, now_text

log = logging.getLogger("envflow.reaper")

RETRY_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED)
REAPER_LOCK = keys.PREFIX + "reaper:lock"


class Reaper:
    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.redis: Redis = store.redis
        self.settings = store.settings

    def reap(self) -> list[tuple[str, str]]:
        """Scan every RUNNING run once; return ``(run_id, new_state)`` for each one reaped."""
        reaped = []
        for raw in self.redis.zrange(keys.ACTIVE_RUNS, 0, -1):
            run_id = raw.decode()
            state = self.check_run(run_id)
            if state:
                reaped.append((run_id, state))
        return reaped

    def reap_shared(self, holder: str) -> list[tuple[str, str]]:
        """One :meth:`reap` pass per ``reaper_interval`` cluster-wide, whoever calls it."""
        ttl_ms = max(int(self.settings.reaper_interval * 900), 1)
        if not self.redis.set(REAPER_LOCK, holder, nx=True, px=ttl_ms):
            return []
        return self.reap()

    def check_run(self, run_id: str, reason: str = "worker lost: no heartbeat within the lease") -> str | None:
        """Reap one run if its attempt lost its worker; return the run's new state, else None."""
        state, attempt, queue_name = self.redis.hmget(keys.run(run_id), "state", "attempt", "queue")
        if state != b"RUNNING" or attempt is None or self.redis.exists(keys.lease(run_id)):
            if state is None:
                self.redis.zrem(keys.ACTIVE_RUNS, run_id)
            return None
        will_retry = self._abandon_job(run_id, (queue_name or b"default").decode())
        result = self.store.scripts.crash(
            keys=[keys.run(run_id), keys.lease(run_id), keys.ACTIVE_RUNS, keys.PENDING_RUNS, keys.output(run_id)],
            args=[
                attempt.decode(),
                now_text(),
                1 if will_retry else 0,
                reason,
                self.settings.history_ttl,
                self.settings.run_ttl,
            ],
        )
        if result:
            new_state = result.decode() if isinstance(result, bytes) else str(result)
            log.warning("run %s attempt %s: %s -> %s", run_id, attempt.decode(), reason, new_state)
            return new_state
        return None

    def _abandon_job(self, run_id: str, queue_name: str) -> bool:
        """Let RQ handle the job as abandoned; True when RQ put it back for a retry."""
        registry = StartedJobRegistry(queue_name, connection=self.redis, serializer=SERIALIZER)
        # Expire just this job's executions, then run RQ's own cleanup on them.
        members = [m for m, _ in self.redis.zscan_iter(registry.key, match=f"{run_id}:*")]
        if members:
            self.redis.zadd(registry.key, {m: 0 for m in members}, xx=True)
            registry.cleanup(timestamp=time.time() - self.settings.lease_ttl)
        try:
            job = Job.fetch(run_id, connection=self.redis, serializer=SERIALIZER)
        except NoSuchJobError:
            return False
        return job.get_status() in RETRY_STATUSES


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
    """Reap the runs a dead worker of this same name left: their leases are void now."""
    reaped = []
    for raw in reaper.redis.zrange(keys.ACTIVE_RUNS, 0, -1):
        run_id = raw.decode()
        holder = reaper.redis.get(keys.lease(run_id))
        if holder is not None and holder.decode() == worker_name:
            reaper.redis.delete(keys.lease(run_id))
            state = reaper.check_run(run_id, reason=f"worker {worker_name} died and was restarted")
            if state:
                reaped.append((run_id, state))
    return reaped
