"""Small statistics over samples (seconds), and the units the table prints them in."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linearly interpolated between closest ranks (numpy's default)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(samples: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p95, p99, max and mean of a list of samples."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "min": min(samples),
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "mean": sum(samples) / len(samples),
    }


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"


def delta_ms(seconds: float) -> str:
    """A signed difference: ``+6.3 ms``, ``-0.2 ms``."""
    return ("+" if seconds >= 0 else "-") + ms(abs(seconds))


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs"


def rate(per_second: float, unit: str) -> str:
    if per_second >= 10_000:
        return f"{per_second / 1000:,.0f}k {unit}/s"
    if per_second < 10:
        return f"{per_second:.2f} {unit}/s"
    return f"{per_second:,.1f} {unit}/s"


def size(n: float) -> str:
    """Bytes in the largest unit that keeps them above 1: ``812 B``, ``3.4 KiB``, ``5.8 MiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,.0f} B"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan
