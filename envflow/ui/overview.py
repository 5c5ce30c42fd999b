"""The overview, the UI's landing page: is everything all right?

Counts by state for the last hour, day and week, and runs per span, come from the state indexes'
``ZCOUNT``s (``envflow/store/counts.py``); the running, waiting and failed runs shown are the newest
few of their states' indexes; workers and queues are what the Workers page reads. So reading it
costs the same with a hundred runs in Redis or a million: it grows with what it shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..client import Client
from ..models import RunRecord, RunState
from ..store import counts
from . import fleet

WINDOWS = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}
RANGES = {"24h": (3600.0, 24), "7d": (6 * 3600.0, 28)}  # span width, spans
FAILED = (RunState.FAILED, RunState.CRASHED, RunState.TIMED_OUT)
SHOWN = 10  # running, waiting and failed runs listed at most


@dataclass
class Waiting:
    reason: str
    runs: list[RunRecord] = field(default_factory=list)


@dataclass
class Overview:
    windows: dict[str, counts.Counts]
    chart: list[counts.Counts]
    chart_start: float
    chart_width: float
    running: list[RunRecord]
    running_total: int
    waiting: list[Waiting]
    waiting_total: int
    failures: list[RunRecord]
    workers: list[fleet.WorkerInfo]
    queues: list[dict]

    @property
    def healthy(self) -> bool:
        """No failure in the last hour, and a live worker if anything waits."""
        last_hour = self.windows["1h"]
        return not any(last_hour[s] for s in FAILED) and (bool(self.workers) or not self.waiting_total)


def _waiting(records: list[RunRecord]) -> list[Waiting]:
    groups: dict[str, Waiting] = {}
    for record in records:
        reason = record.waiting.message if record.waiting else "queued, waiting for a free worker"
        groups.setdefault(reason, Waiting(reason)).runs.append(record)
    return sorted(groups.values(), key=lambda g: -len(g.runs))


def read(client: Client, chart_range: str = "24h", now: float | None = None) -> Overview:
    """The overview as it is now.

    :param chart_range: ``24h`` (hourly bars) or ``7d`` (six-hour bars).
    """
    now = time.time() if now is None else now
    width, spans = RANGES.get(chart_range, RANGES["24h"])
    start = (now // width) * width - (spans - 1) * width
    redis = client.redis
    windows = dict(zip(WINDOWS, counts.since(redis, list(WINDOWS.values()), now)))
    sizes = client.store.queries.state_counts(None, [RunState.RUNNING, RunState.PENDING])
    failures = sorted((r for s in FAILED for r in client.runs(state=s, limit=SHOWN)),
                      key=lambda r: r.updated_at or r.created_at, reverse=True)[:SHOWN]
    return Overview(
        windows=windows,
        chart=counts.histogram(redis, start, width, spans),
        chart_start=start,
        chart_width=width,
        running=client.runs(state=RunState.RUNNING, limit=SHOWN),
        running_total=sizes[RunState.RUNNING],
        waiting=_waiting(client.runs(state=RunState.PENDING, limit=SHOWN)),
        waiting_total=sizes[RunState.PENDING],
        failures=failures,
        workers=fleet.workers(client),
        queues=fleet.queues(client),
    )


__all__ = ["Overview", "RANGES", "WINDOWS", "read"]
