"""How the UI shows values: times, durations, states, redacted and printable text, in one place.

Every field reaches a page through Jinja with autoescaping on, and through :func:`finalize`,
which shows control characters escaped as the CLI's ``printable`` does (a bidi override in a
worker's name cannot reorder the row it is in). Secrets are hidden by ``envflow.redaction``,
with the same rules as the CLI: env values under secret-looking names, URL credentials in
errors and reasons.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..cli.base import ago, printable
from ..models import FINAL_STATES, RunRecord, RunState
from ..redaction import redact_text

TEMPLATES = Path(__file__).parent / "templates"
STATES = [s.value for s in RunState]


def finalize(value: Any) -> Any:
    """Applied to every ``{{ value }}`` before escaping: control characters shown escaped; markup kept."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return "" if value is None else value
    return printable(value)


def timestamp(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def seconds(value: float | None) -> str:
    """A duration: ``0.42s``, ``12.3s``, ``4m 05s``, ``2h 03m``."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s" if value < 1 else f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m {int(value % 60):02d}s"
    return f"{int(value // 3600)}h {int(value % 3600 // 60):02d}m"


def run_duration(record: RunRecord, now: float | None = None) -> float | None:
    """From the run's first start to its end (to now while it runs); None if it never started."""
    start = first_start(record)
    if start is None:
        return None
    end = record.updated_at if record.state.is_final else (now or time.time())
    return max((end or start) - start, 0.0)


def first_start(record: RunRecord) -> float | None:
    for name, ts, _ in record.transitions:
        if name == RunState.RUNNING.value:
            return ts
    return None


def error_text(error_type: str | None, error: str | None) -> str:
    """An error as the CLI shows it: ``Type: message``, URL credentials hidden."""
    if not error and not error_type:
        return ""
    return redact_text(f"{error_type + ': ' if error_type else ''}{error or ''}")


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def environment() -> Environment:
    """The Jinja environment of every page: autoescaping always on, undefined names are errors."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ts=timestamp, ago=ago, secs=seconds, json=json_text, redact=redact_text)
    env.globals.update(states=STATES, error_text=error_text, run_duration=run_duration, RUNNING=RunState.RUNNING,
                       final_states=" ".join(sorted(s.value for s in FINAL_STATES)))
    return env
