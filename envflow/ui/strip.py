"""A deployment's recent runs as a strip of bars, drawn on the server as SVG.

Oldest on the left, newest on the right; a bar's colour is the run's state and its height the
run's duration (on a square-root scale, so one long run does not flatten the others; a run
that never started is a stub). Each bar links to its run and names it in a tooltip. Every
text in the SVG is escaped; colours are presentation attributes, which the UI's
Content-Security-Policy allows (inline styles it does not).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from markupsafe import Markup

from ..models import RunRecord
from ..states import LOOKS
from .views import run_duration, seconds, timestamp

BAR, GAP, HEIGHT, STUB = 8, 2, 32, 3


@dataclass(frozen=True)
class Durations:
    """How long a deployment's recent ended runs took: their strip, and its p50 and p95."""

    strip: Markup
    runs: int
    p50: float | None
    p95: float | None


def durations(records: list[RunRecord], now: float | None = None) -> Durations:
    """The duration chart of ``records`` (newest first): every run's bar, percentiles of the ended ones."""
    took = sorted(d for r in records if r.state.is_final and (d := run_duration(r, now)) is not None)

    def percentile(p: float) -> float | None:
        return took[min(len(took) - 1, math.ceil(p * len(took)) - 1)] if took else None

    return Durations(strip_svg(records, now), len(took), percentile(0.5), percentile(0.95))


def strip_svg(records: list[RunRecord], now: float | None = None) -> Markup:
    """The strip of ``records`` (newest first, as listed), as an inline ``<svg>`` element."""
    now = time.time() if now is None else now
    runs = list(reversed(records))
    if not runs:
        return Markup('<svg class="strip" width="120" height="{h}" role="img" aria-label="no runs yet">'
                      '<text x="0" y="{y}" fill="#888" font-size="11">no runs yet</text></svg>').format(
            h=HEIGHT, y=HEIGHT // 2 + 4)
    durations = [run_duration(r, now) for r in runs]
    longest = max((d for d in durations if d), default=0.0)
    width = len(runs) * (BAR + GAP)
    parts = [Markup('<svg class="strip" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
                    'aria-label="recent runs: duration and state">').format(w=width, h=HEIGHT)]
    for i, (record, took) in enumerate(zip(runs, durations)):
        if took is None or longest <= 0:
            bar = STUB
        else:
            bar = max(STUB, round(HEIGHT * math.sqrt(took / longest)))
        state = record.state.value
        label = f"{record.short_id} {state} {seconds(took)} · {timestamp(record.created_at)}"
        parts.append(Markup(
            '<a href="/runs/{id}"><rect x="{x}" y="{y}" width="{bw}" height="{bh}" rx="1" fill="{fill}">'
            '<title>{label}</title></rect></a>'
        ).format(id=record.id, x=i * (BAR + GAP), y=HEIGHT - bar, bw=BAR, bh=bar,
                 fill=LOOKS[record.state].colour, label=label))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)

