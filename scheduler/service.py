"""The scheduler service: every registered deployment's schedules become runs, each slot once.

Any number of replicas may run against one Redis; they need no leader, because every
slot is committed in a transaction that only one of them can win (``enqueue.py``).
Each pass reads all deployments and their cursors in two round trips, commits the ones
with due slots, then sleeps until the next slot is due, at most ``tick`` seconds so that
new, changed, paused and resumed deployments are seen soon. The service also runs the
crash reaper (``envflow.store.reaper``), so runs of dead workers end even when no worker runs, and
delivers hooks (``envflow.hooks``) in a thread of its own.

Redis errors never stop the service: it logs them, backs off and tries again; slots
that fell due meanwhile are still on time if it is back within the grace period.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import redis
from redis import Redis

from envflow.backoff import Backoff
from envflow.client import Client
from envflow.connection import connect, describe
from envflow.errors import QueueError
from envflow.hooks.service import HookDelivery
from envflow.models import DeploymentRecord
from envflow.schedules import next_slot, to_datetime
from envflow.settings import Settings
from envflow.store import keys
from envflow.store.deployments import DeploymentStore
from envflow.store.reaper import PeriodicReaper
from envflow.store.runs import RunStore

from .defaults import DEFAULT_GRACE, DEFAULT_TICK
from .enqueue import Outcome, SlotEnqueuer, parse_cursors
from .plan import decide_deployment, stale_cursors
from .registration import register_files

log = logging.getLogger("envflow.scheduler")

MIN_SLEEP = 0.005  # never spin, even when a slot is due this very moment
MAX_BACKOFF = 5.0
WATCH_RETRIES = 3


def default_name() -> str:
    return f"scheduler-{socket.gethostname()}-{os.getpid()}"


class SchedulerService:
    """Creates the runs of scheduled deployments, and reaps crashed runs.

    :param settings: the process's settings (Redis URL, deployment files, reaper interval).
    :param tick: longest sleep between passes, in seconds.
    :param grace: seconds a slot may be late and still run whatever the missed-runs policy.
    :param clock: the time source (injected by tests); it must agree across replicas.
    :param reap: run the crash reaper in a background thread while :meth:`run` runs.
    :param connection: a Redis client to use (default: one for ``settings.redis_url``, with timeouts).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        tick: float = DEFAULT_TICK,
        grace: float = DEFAULT_GRACE,
        clock: Callable[[], float] = time.time,
        reap: bool = True,
        connection: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or default_name()
        self.tick_seconds = tick
        self.clock = clock
        self.reap = reap
        # Timeouts, so a Redis that hangs instead of refusing is noticed like one that is down.
        self.redis = connection or connect(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.store = RunStore(self.redis, settings)
        self.enqueuer = SlotEnqueuer(self.store, grace=grace)
        self.stopping = threading.Event()
        self._failing: set[str] = set()  # deployments whose error was logged

    # One pass

    def tick(self) -> float:
        """Commit every deployment's due slots once; return the clock time the next slot is due."""
        now = self.clock()
        # Liveness for `envflow scheduler health`: refreshed every pass, gone soon after the last.
        self.redis.set(keys.scheduler(self.name), socket.gethostname(), ex=int(3 * self.tick_seconds) + 30)
        deployments = DeploymentStore(self.redis)
        names = deployments.names()
        if not names:
            return now + self.tick_seconds
        with self.redis.pipeline(transaction=False) as pipe:
            deployments.fetch(names, pipe)
            pipe.smembers(keys.PAUSED_DEPLOYMENTS)
            for n in names:
                pipe.hgetall(keys.schedule_state(n))
            # A key of the wrong type fails its own command only, not the whole pass.
            raws, paused_raw, *states = pipe.execute(raise_on_error=False)
        for result in (raws, paused_raw):
            if isinstance(result, Exception):
                raise result
        paused = {p.decode() for p in paused_raw}
        next_due = now + self.tick_seconds
        for name, raw, state in zip(names, raws, states):
            if raw is None:
                continue  # deleted since the names were read
            try:
                if isinstance(state, Exception):
                    raise state
                next_due = min(next_due, self._schedule(name, raw, parse_cursors(state), name in paused, now))
            except (redis.ConnectionError, redis.TimeoutError):
                raise  # Redis is away: the loop backs off
            except Exception as e:
                # One broken deployment must not stop the others; say so once, not every pass.
                if name not in self._failing:
                    self._failing.add(name)
                    log.error("deployment %s is not scheduled: %s: %s", name, type(e).__name__, e, exc_info=True)
                continue
            self._failing.discard(name)
        return next_due

    def _schedule(self, name: str, raw: bytes, cursors: dict[str, float], paused: bool, now: float) -> float:
        """Commit one deployment's due slots if it has any; return when its next slot is due."""
        record = DeploymentRecord.model_validate_json(raw)
        if not record.schedules and not cursors:
            return math.inf
        decisions = decide_deployment(record, cursors, now, paused=paused, grace=self.enqueuer.grace)
        if stale_cursors(record, cursors) or any(d.writes for d in decisions):
            self._commit(name, now)
        if paused or not record.schedules:
            return math.inf
        return min(next_slot(s, max(now, cursors.get(s.id, now))) for s in record.schedules)

    def _commit(self, name: str, now: float) -> Outcome | None:
        for _ in range(WATCH_RETRIES):
            try:
                outcome = self.enqueuer.apply(name, now)
            except redis.WatchError:
                continue  # another replica (or a pause, an update) changed it first: decide again
            self._report(outcome)
            return outcome
        log.debug("%s: state kept changing during %d attempts; next pass", name, WATCH_RETRIES)
        return None

    @staticmethod
    def _report(outcome: Outcome) -> None:
        for decision in outcome.decisions:
            if decision.missed:
                log.warning("%s: schedule %s missed slots while no scheduler ran; %d run(s) made now, "
                            "as the deployment's missed_runs policy says", outcome.deployment, decision.schedule.id,
                            len(decision.enqueue))
        for schedule_id, slot, run_id in outcome.created:
            log.info("%s: run %s for slot %s (schedule %s)", outcome.deployment, run_id[:8],
                     to_datetime(slot).isoformat(timespec="milliseconds"), schedule_id)

    # The service

    def register_deployment_files(self) -> None:
        """Register the files of ``ENVFLOW_DEPLOYMENTS``, retrying while Redis is unreachable."""
        pattern = self.settings.deployments
        if not pattern:
            return
        client = Client(settings=self.settings)
        backoff = Backoff(first=0.5, cap=MAX_BACKOFF)
        while not self.stopping.is_set():
            try:
                register_files(client, pattern)
                return
            except QueueError as e:
                delay = backoff.next()
                log.warning("registering deployment files failed: %s; retrying in %.1fs", e, delay)
                self.stopping.wait(delay)

    def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when called from the main thread)."""
        restore = self._install_signal_handlers()
        reaper = PeriodicReaper(self.store.reaper, self.name) if self.reap else None
        hooks = HookDelivery(self.redis, self.settings, self.name, defer_to_scheduler=False)
        try:
            log.info("scheduler %s started on %s (tick %gs, misfire grace %gs)", self.name,
                     describe(self.redis), self.tick_seconds, self.enqueuer.grace)
            self.register_deployment_files()
            if reaper is not None:
                reaper.start()
            hooks.start()
            self._loop()
        finally:
            hooks.close()
            if reaper is not None:
                reaper.stop.set()
                if reaper.thread.is_alive():
                    reaper.thread.join(timeout=5)
            restore()
            log.info("scheduler %s stopped", self.name)

    def _loop(self) -> None:
        backoff, failing = Backoff(first=0.5, cap=MAX_BACKOFF), False
        while not self.stopping.is_set():
            try:
                next_due = self.tick()
            except redis.RedisError as e:
                failing, delay = True, backoff.next()
                log.warning("cannot reach Redis at %s (%s); retrying in %.1fs", describe(self.redis), e, delay)
                self.stopping.wait(delay)
                continue
            except Exception:
                failing, delay = True, backoff.next()
                log.exception("scheduler pass failed; retrying in %.1fs", delay)
                self.stopping.wait(delay)
                continue
            if failing:
                log.info("Redis at %s answers again", describe(self.redis))
                failing = False
                backoff.reset()
            delay = min(max(next_due - self.clock(), MIN_SLEEP), self.tick_seconds)
            self.stopping.wait(delay)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass."""
        self.stopping.set()

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("scheduler %s: %s received, stopping", self.name, signal.Signals(signum).name)
            self.stop()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
