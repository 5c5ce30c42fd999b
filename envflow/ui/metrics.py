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
per run not yet ended (one pipelined round trip), and the fields of those whose state
changed. At start it takes the runs in flight from the active and pending indexes. Like any
process-local counter they restart from zero with the process; ``rate()`` and ``increase()``
handle that. The gauges cost one command per queue and per worker, and two per limit.
"""

from __future__ import annotations

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


@dataclass
class _Open:
    started_seen: bool  # its dispatch was observed, or happened before the UI started


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
            pipe.zrange(keys.PENDING_RUNS, 0, -1)
            *recent, active, pending = pipe.execute()
        self.seen = {i.decode(): score for part in recent for i, score in part}
        self.open.update({i.decode(): _Open(started_seen=True) for i in active})
        self.open.update({i.decode(): _Open(started_seen=False) for i in pending})
        self.ready = True

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
            fresh = [item for part in pipe.execute() for item in part]
        for raw, score in fresh:
            run_id = raw.decode()
            if run_id not in self.seen:
                self.seen[run_id] = score
                self.open.setdefault(run_id, _Open(started_seen=False))
            self.cursor = max(self.cursor, score)
        floor = self.cursor - LOOKBACK
        self.seen = {i: s for i, s in self.seen.items() if s >= floor}

    def _check_open(self) -> None:
        ids = list(self.open)
        if not ids:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hget(keys.run(run_id), "state")
            states = pipe.execute()
        changed = []
        for run_id, raw in zip(ids, states):
            state = raw.decode() if raw is not None else None
            if state is None or state in FINAL or state == RUNNING and not self.open[run_id].started_seen:
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
            del self.open[run_id]
            return
        moves = run_hash.transitions(transitions or "", float(created or 0))
        first_start = next((ts for name, ts, _ in moves if name == RUNNING), None)
        tracked = self.open[run_id]
        if first_start is not None and not tracked.started_seen:
            due = max(float(created or 0), float(scheduled or 0))
            self.dispatch.observe(max(first_start - due, 0.0))
            tracked.started_seen = True
        if state in FINAL:
            self.runs.labels(deployment, state).inc()
            if first_start is not None and moves:
                self.duration.labels(deployment).observe(max(moves[-1][1] - first_start, 0.0))
            del self.open[run_id]


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
