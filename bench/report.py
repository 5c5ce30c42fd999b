"""The one table a benchmark run prints, and the JSON file with its raw samples."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HEADERS = ("case", "envflow", "baselines (same run)", "ratios", "target", "met?")


@dataclass
class Row:
    """One line of the table: an envflow figure beside its baselines.

    ``met`` is None where the case has no target (informational rows).
    """

    case: str
    envflow: str
    baselines: list[str] = field(default_factory=list)
    ratios: list[str] = field(default_factory=list)
    target: str = "—"
    met: bool | None = None

    def cells(self) -> list[list[str]]:
        met = "—" if self.met is None else ("yes" if self.met else "NO")
        return [[self.case], [self.envflow], self.baselines or ["—"], self.ratios or ["—"], [self.target], [met]]


def render(rows: list[Row], notes: list[str]) -> str:
    """A plain-text table (multi-line cells), followed by numbered notes."""
    cells = [[[h] for h in HEADERS]] + [r.cells() for r in rows]
    widths = [max(len(line) for row in cells for line in row[i]) for i in range(len(HEADERS))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule]
    for index, row in enumerate(cells):
        height = max(len(c) for c in row)
        for k in range(height):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(row, widths)]
            out.append("| " + " | ".join(parts) + " |")
        if index == 0 or index == len(cells) - 1:
            out.append(rule)
    for i, note in enumerate(notes, 1):
        out.append(f"[{i}] {note}")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    import redis
    import rq

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rq": rq.__version__,
        "redis_py": redis.__version__,
    }
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def _clean(value: Any) -> Any:
    """JSON-safe: NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, meta: dict[str, Any], cases: dict[str, Any], rows: list[Row], notes: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "rows": [asdict(r) for r in rows], "notes": notes, "cases": cases}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1))
    os.replace(tmp, path)
