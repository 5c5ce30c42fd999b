"""Runs by state over time, counted from the state indexes alone.

Every state's index is a sorted set of run ids scored by creation time (``indexes.py``), so the
runs created in a window that are now in a state are one ``ZCOUNT`` (logarithmic in the index's
size): an overview costs the same round trip with a hundred runs or a million. Runs are counted
by when they were created and the state they are in now. An expired run's entry stays until the
reaper's next trim (at most a minute), so it may be counted that long.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis

from ..states import RunState
from . import keys

Counts = dict[RunState, int]


def since(redis: Redis, windows: Sequence[float], now: float) -> list[Counts]:
    """For each window (seconds back from ``now``), the runs created in it, by their state now."""
    states = list(RunState)
    with redis.pipeline(transaction=False) as pipe:
        for window in windows:
            for state in states:
                pipe.zcount(keys.state_index(state.value), now - window, "+inf")
        found = pipe.execute()
    return [dict(zip(states, found[i * len(states):(i + 1) * len(states)])) for i in range(len(windows))]


def histogram(redis: Redis, start: float, width: float, buckets: int) -> list[Counts]:
    """The runs created in each of ``buckets`` consecutive spans of ``width`` seconds from ``start``,
    by their state now (the last span is open-ended, so a run made a moment ago is in it)."""
    states = list(RunState)
    with redis.pipeline(transaction=False) as pipe:
        for i in range(buckets):
            low, high = start + i * width, start + (i + 1) * width
            for state in states:
                pipe.zcount(keys.state_index(state.value), low, f"({high}" if i < buckets - 1 else "+inf")
        found = pipe.execute()
    return [dict(zip(states, found[i * len(states):(i + 1) * len(states)])) for i in range(buckets)]
