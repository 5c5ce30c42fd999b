"""Runs per time span by state, as stacked bars drawn on the server as SVG (as the strip is).

Each bar is one span (an hour, or six for a week), its segments the runs created then, by their
state now, in the colours of ``envflow/states.py``; every bar names its counts in a tooltip and
the chart names its totals for screen readers. No charting framework, no script: the page's
Content-Security-Policy allows presentation attributes only.
"""

from __future__ import annotations

import time

from markupsafe import Markup

from ..states import LOOKS, RunState
from ..store.counts import Counts

BAR, GAP, HEIGHT, AXIS = 14, 3, 96, 16
ORDER = [RunState.COMPLETED, RunState.RUNNING, RunState.PENDING, RunState.SCHEDULED, RunState.CANCELLED,
         RunState.TIMED_OUT, RunState.CRASHED, RunState.FAILED]  # failures on top, where the eye lands


def _label(start: float, width: float) -> str:
    return time.strftime("%H:%M" if width < 6 * 3600 else "%a %H:%M", time.localtime(start))


def runs_chart(buckets: list[Counts], start: float, width: float) -> Markup:
    """The stacked bars of ``buckets`` (oldest first; each spans ``width`` seconds from ``start``)."""
    totals = [sum(b.values()) for b in buckets]
    top = max(totals, default=0) or 1
    chart_w = len(buckets) * (BAR + GAP)
    summary = ", ".join(f"{s.value} {sum(b[s] for b in buckets)}" for s in ORDER if any(b[s] for b in buckets))
    parts = [Markup('<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
                    'aria-label="runs per span by state: {summary}">').format(
        w=chart_w + 40, h=HEIGHT + AXIS, summary=summary or "no runs")]
    for i, bucket in enumerate(buckets):
        x = i * (BAR + GAP)
        y = HEIGHT
        when = start + i * width
        counts = ", ".join(f"{s.value} {bucket[s]}" for s in ORDER if bucket[s]) or "no runs"
        parts.append(Markup("<g><title>{label}: {counts}</title>").format(
            label=time.strftime("%Y-%m-%d %H:%M", time.localtime(when)), counts=counts))
        parts.append(Markup('<rect x="{x}" y="0" width="{w}" height="{h}" fill="transparent"/>').format(
            x=x, w=BAR, h=HEIGHT))
        for state in ORDER:
            n = bucket[state]
            if not n:
                continue
            h = max(1, round(HEIGHT * n / top))
            y -= h
            parts.append(Markup('<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}"/>').format(
                x=x, y=y, w=BAR, h=h, fill=LOOKS[state].colour))
        parts.append(Markup("</g>"))
        if i % max(1, len(buckets) // 6) == 0:
            parts.append(Markup('<text x="{x}" y="{y}" font-size="10" fill="#6b7280">{t}</text>').format(
                x=x, y=HEIGHT + AXIS - 3, t=_label(when, width)))
    parts.append(Markup('<text x="{x}" y="10" font-size="10" fill="#6b7280">{top}</text>').format(
        x=chart_w + 4, top=max(totals, default=0)))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
