"""``/metrics``: envflow's fleet in Prometheus' text format, cheap to scrape, no per-run labels.

==================================================  =====================================================
metric                                              what it counts, and how a scrape gets it
==================================================  =====================================================
``envflow_runs_total{deployment,state}``            counter: runs that ended in ``state`` (a final state)
                                                    since this UI process started
``envflow_run_duration_seconds{deployment}``        histogram: first start -> end of those runs (runs that
                                                    never started are not observed)
``envflow_dispatch_seconds``                        histogram: submitted (or due, for a scheduled run) ->
                                                    first started, for runs started since the UI started
``envflow_runs_running``                            gauge: runs RUNNING now (``ZCARD`` of the active index)
``envflow_queue_depth{queue}``                      gauge: runs waiting on the queue now (RQ's queue length)
``envflow_workers{queue}``                          gauge: live workers listening on the queue (RQ's registry)
``envflow_limit_slots{limit}``                      gauge: a concurrency limit's slots
``envflow_limit_in_use{limit}``                     gauge: its slots held by RUNNING runs now
``envflow_limit_waiting{limit}``                    gauge: runs in line for it now
==================================================  =====================================================

The counters and histograms are kept by :class:`RunTracker`, which follows each run from its
creation to its end and counts it once, so a scrape never scans the run history: it reads the
runs created since the previous scrape (the creation index, re-reading the last
``LOOKBACK`` seconds for runs whose creating transaction committed late), one ``HGET state``
per run running, just created, or among the waiting runs that the PENDING and SCHEDULED state
indexes' counts say changed (:class:`Waiting`), and the fields of those whose state changed: a
backlog of waiting runs costs a few ``ZCOUNT`` s, not one command each. At start it takes the
runs in flight from the active index and the waiting ones from the state indexes. Like any
process-local counter they restart from zero with the process; ``rate()`` and ``increase()``
handle that. The gauges cost one command per queue and per worker, and two per limit.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from ..client import Client
from ..models import RunState
from ..store import keys, run_hash

LOOKBACK = 30.0  # seconds of the creation index re-read every scrape
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
RUNNING = RunState.RUNNING.value
FINAL = frozenset(s.value for s in RunState if s.is_final)
WAITING_STATES = (RunState.PENDING.value, RunState.SCHEDULED.value)
LEAF_RUNS = 64  # a range of waiting runs this small whose count differs is read run by run
SAMPLE_RUNS = 64  # waiting runs read in turn every scrape, whatever the counts say


@dataclass
class _Open:
    started_seen: bool  # its dispatch was observed, or happened before the UI started
    created: float | None = None  # its score in the state indexes, once known
    waiting: bool = False  # last seen PENDING or SCHEDULED, and then in ``Waiting``


class Waiting:
    """The followed runs last seen PENDING or SCHEDULED, by creation time.

    Which of them changed state is found by comparing counts with the state indexes range by
    range (``ZCOUNT``), halving only the ranges whose counts differ: a scrape reads the runs that
    changed and their ranges' neighbours, in one round trip per halving, not one command per
    waiting run.
    """

    def __init__(self) -> None:
        self.items: list[tuple[float, str]] = []  # (creation time, run id), sorted
        self.turn = 0

    def add(self, run_id: str, created: float) -> None:
        i = bisect.bisect_left(self.items, (created, run_id))
        if i == len(self.items) or self.items[i] != (created, run_id):
            self.items.insert(i, (created, run_id))

    def discard(self, run_id: str, created: float) -> None:
        i = bisect.bisect_left(self.items, (created, run_id))
        if i < len(self.items) and self.items[i] == (created, run_id):
            del self.items[i]

    def suspects(self, redis: Redis, sample: int) -> list[str]:
        """The runs that may have left PENDING and SCHEDULED, plus ``sample`` others in turn (which
        catch what a coincidence of counts hides: one run gone and another not yet followed)."""
        found: list[str] = []
        ranges = [(0, len(self.items))] if self.items else []
        n = len(WAITING_STATES)
        while ranges:
            with redis.pipeline(transaction=False) as pipe:
                for lo, hi in ranges:
                    low, high = self._bounds(lo, hi)
                    for state in WAITING_STATES:
                        pipe.zcount(keys.state_index(state), low, high)
                counts = pipe.execute()
            differing = [(lo, hi) for i, (lo, hi) in enumerate(ranges) if sum(counts[n * i:n * (i + 1)]) != hi - lo]
            ranges = []
            for lo, hi in differing:
                mid = self._split(lo, hi)
                if hi - lo <= LEAF_RUNS or mid is None:
                    found += [run_id for _, run_id in self.items[lo:hi]]
                else:
                    ranges += [(lo, mid), (mid, hi)]
        if self.items and sample:
            self.turn %= len(self.items)
            picked = self.items[self.turn:self.turn + sample]
            picked += self.items[:sample - len(picked)]
            self.turn += sample
            found += [run_id for _, run_id in picked]
        return list(dict.fromkeys(found))

    def _bounds(self, lo: int, hi: int) -> tuple[float, float | str]:
        """The scores of items ``lo..hi-1``: from the first one's to the next item's, excluded."""
        return self.items[lo][0], f"({self.items[hi][0]!r}" if hi < len(self.items) else "+inf"

    def _split(self, lo: int, hi: int) -> int | None:
        """Where to halve ``lo..hi``: a position whose score differs from the one before it (equal
        scores stay in one range); None when they all share one score."""
        middle = self.items[(lo + hi) // 2][0]
        mid = bisect.bisect_left(self.items, (middle, ""), lo, hi)
        if mid == lo:
            mid = bisect.bisect_right(self.items, (middle, "\uffff"), lo, hi)
        return mid if lo < mid < hi else None


class RunTracker:
    """Counts each run once when it ends, and observes its dispatch and duration.

    :param redis: envflow's Redis.
    :param registry: where the counter and histograms are registered.
    """

    def __init__(self, redis: Redis, registry: CollectorRegistry) -> None:
        self.redis = redis
        self.lock = threading.Lock()
        self.runs = Counter("envflow_runs", "Runs that ended, by deployment and final state, since this "
                            "process started.", ["deployment", "state"], registry=registry)
        self.duration = Histogram("envflow_run_duration_seconds", "Seconds from a run's first start to its end.",
                                  ["deployment"], buckets=DURATION_BUCKETS, registry=registry)
        self.dispatch = Histogram("envflow_dispatch_seconds", "Seconds from a run's submission (or due time) to "
                                  "its first start.", buckets=DISPATCH_BUCKETS, registry=registry)
        self.open: dict[str, _Open] = {}
        self.waiting = Waiting()
        self.fresh: list[str] = []  # taken since the last check: each read once, whatever its state
        self.seen: dict[str, float] = {}  # ids created within LOOKBACK of the cursor, already taken
        self.started = self.cursor = time.time()
        self.ready = False
        try:
            self._start()
        except RedisError:  # Redis not up yet: the first scrape that reaches it starts the count
            pass

    def _start(self) -> None:
        """One snapshot: the runs in flight (followed to their end) and those created just before the
        start that are not (never counted)."""
        with self.redis.pipeline(transaction=True) as pipe:
            _created(pipe, self.started - LOOKBACK, self.started)
            pipe.zrange(keys.ACTIVE_RUNS, 0, -1)
            for state in WAITING_STATES:
                pipe.zrange(keys.state_index(state), 0, -1, withscores=True)
            replies = pipe.execute()
        recent, active, waiting = replies[:len(RunState)], replies[len(RunState)], replies[len(RunState) + 1:]
        self.seen = {i.decode(): score for part in recent for i, score in part}
        self.open.update({i.decode(): _Open(started_seen=True) for i in active})
        for part in waiting:
            for raw, score in part:
                self._wait(raw.decode(), score, started_seen=False)
        self.ready = True

    def _wait(self, run_id: str, created: float, started_seen: bool) -> None:
        tracked = self.open.setdefault(run_id, _Open(started_seen=started_seen))
        tracked.created, tracked.waiting = created, True
        self.waiting.add(run_id, created)

    def _forget(self, run_id: str) -> None:
        tracked = self.open.pop(run_id, None)
        if tracked is not None and tracked.waiting and tracked.created is not None:
            self.waiting.discard(run_id, tracked.created)

    def update(self) -> None:
        """Take the runs created since the last update, and count those that have ended."""
        with self.lock:
            if not self.ready:
                self._start()
            self._take_new()
            self._check_open()

    def _take_new(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            _created(pipe, self.cursor - LOOKBACK, "+inf")
            fresh = [(state.value, item) for state, part in zip(RunState, pipe.execute()) for item in part]
        for state, (raw, score) in fresh:
            run_id = raw.decode()
            if run_id not in self.seen:
                self.seen[run_id] = score
                if run_id not in self.open:
                    self.open[run_id] = _Open(started_seen=False, created=score)
                    if state in WAITING_STATES:  # as the state indexes have it: their counts stay equal
                        self._wait(run_id, score, started_seen=False)
                    self.fresh.append(run_id)
            self.cursor = max(self.cursor, score)
        floor = self.cursor - LOOKBACK
        self.seen = {i: s for i, s in self.seen.items() if s >= floor}

    def _check_open(self) -> None:
        """Read the state of the runs that may have changed: those running (as many as the workers run),
        those just taken, and those the state indexes say left PENDING or SCHEDULED."""
        running = [run_id for run_id, tracked in self.open.items() if not tracked.waiting]
        ids = list(dict.fromkeys([*running, *self.fresh, *self.waiting.suspects(self.redis, SAMPLE_RUNS)]))
        self.fresh = []
        if not ids:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hget(keys.run(run_id), "state")
            states = pipe.execute()
        changed = []
        for run_id, raw in zip(ids, states):
            state = raw.decode() if raw is not None else None
            tracked = self.open[run_id]
            if state in WAITING_STATES:
                if not tracked.waiting:  # new, or back from RUNNING to wait for a retry
                    if tracked.created is None:
                        changed.append((run_id, state))
                    else:
                        self._wait(run_id, tracked.created, tracked.started_seen)
                continue
            if tracked.waiting and tracked.created is not None:
                self.waiting.discard(run_id, tracked.created)
                tracked.waiting = False
            if state is None or state in FINAL or state == RUNNING and not tracked.started_seen:
                changed.append((run_id, state))
        if not changed:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id, _ in changed:
                pipe.hmget(keys.run(run_id), ["deployment", "created_at", "scheduled_for", "transitions"])
            details = pipe.execute()
        for (run_id, state), fields in zip(changed, details):
            self._observe(run_id, state, fields)

    def _observe(self, run_id: str, state: str | None, fields: list[bytes | None]) -> None:
        deployment, created, scheduled, transitions = (f.decode() if f else None for f in fields)
        if state is None or deployment is None:  # expired before it was seen to end
            self._forget(run_id)
            return
        tracked = self.open[run_id]
        if state in WAITING_STATES:  # its creation time was not known: now it is
            self._wait(run_id, float(created or 0), tracked.started_seen)
            return
        moves = run_hash.transitions(transitions or "", float(created or 0))
        first_start = next((ts for name, ts, _ in moves if name == RUNNING), None)
        if first_start is not None and not tracked.started_seen:
            due = max(float(created or 0), float(scheduled or 0))
            self.dispatch.observe(max(first_start - due, 0.0))
            tracked.started_seen = True
        if state in FINAL:
            self.runs.labels(deployment, state).inc()
            if first_start is not None and moves:
                self.duration.labels(deployment).observe(max(moves[-1][1] - first_start, 0.0))
            self._forget(run_id)


class FleetCollector(Collector):
    """The gauges, read at each scrape: running runs, queue depths, workers per queue."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def collect(self):  # type: ignore[no-untyped-def]
        running = GaugeMetricFamily("envflow_runs_running", "Runs RUNNING now.")
        running.add_metric([], self.client.redis.zcard(keys.ACTIVE_RUNS))
        depth = GaugeMetricFamily("envflow_queue_depth", "Runs waiting on each queue now.", labels=["queue"])
        workers = GaugeMetricFamily("envflow_workers", "Live workers listening on each queue.", labels=["queue"])
        for queue in self.client.queues():
            depth.add_metric([queue["name"]], queue["queued"])
            workers.add_metric([queue["name"]], len(queue["workers"]))
        yield from (running, depth, workers)
        slots = GaugeMetricFamily("envflow_limit_slots", "Slots of each concurrency limit.", labels=["limit"])
        in_use = GaugeMetricFamily("envflow_limit_in_use", "Slots of each limit held by RUNNING runs now.",
                                   labels=["limit"])
        waiting = GaugeMetricFamily("envflow_limit_waiting", "Runs in line for each limit now.", labels=["limit"])
        for info in self.client.limits():
            slots.add_metric([info.name], info.slots)
            in_use.add_metric([info.name], info.in_use)
            waiting.add_metric([info.name], info.waiting)
        yield from (slots, in_use, waiting)


class Metrics:
    """The registry ``/metrics`` serves."""

    def __init__(self, client: Client) -> None:
        disable_created_metrics()  # no *_created series: they add nothing here
        self.registry = CollectorRegistry(auto_describe=False)
        self.tracker = RunTracker(client.redis, self.registry)
        self.registry.register(FleetCollector(client))

    def scrape(self) -> bytes:
        self.tracker.update()
        return generate_latest(self.registry)


def _created(pipe: Any, start: float, end: float | str) -> None:
    """Queue reads of the runs created between ``start`` and ``end``: each is in the index of its state
    now, scored by its creation time (``envflow/store/indexes.py``)."""
    for state in RunState:
        pipe.zrangebyscore(keys.state_index(state.value), start, end, withscores=True)
