"""What every command shares: error handling, output helpers, the client."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from ..errors import EnvflowError
from ..redaction import redact_text

STATE_COLORS = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "PENDING": "yellow",
    "SCHEDULED": "blue",
    "FAILED": "red",
    "CRASHED": "red",
    "TIMED_OUT": "red",
    "CANCELLED": "magenta",
}


class EnvflowGroup(click.Group):
    """A group whose commands turn envflow errors into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EnvflowError as e:
            if ctx.find_root().params.get("debug"):
                raise
            fail(str(e))
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (credentials in URLs hidden) and exit."""
    click.echo(click.style("error: ", fg="red", bold=True) + redact_text(message), err=True)
    sys.exit(code)


def status(message: str) -> None:
    """envflow's own status lines: stderr, dimmed and marked, apart from a flow's output."""
    click.echo(click.style(f"» {message}", fg="bright_black"), err=True)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def state_text(state: str) -> str:
    return click.style(state, fg=STATE_COLORS.get(state, "white"))


def ago(ts: float | None) -> str:
    """A timestamp as a relative time: '12s ago', '3m ago', 'in 5m'."""
    if not ts:
        return "-"
    delta = time.time() - ts
    future = delta < 0
    delta = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            text = f"{int(delta // size)}{unit}"
            break
    else:
        text = f"{int(delta)}s"
    return f"in {text}" if future else f"{text} ago"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print an aligned table; cells may carry ANSI colors."""
    if not rows:
        return
    plain = [[click.unstyle(str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in plain)) for i, h in enumerate(headers)]
    click.echo("  ".join(click.style(h.ljust(w), bold=True) for h, w in zip(headers, widths)).rstrip())
    for row, prow in zip(rows, plain):
        click.echo("  ".join(str(c) + " " * (w - len(p)) for c, p, w in zip(row, prow, widths)).rstrip())


def get_client():  # type: ignore[no-untyped-def]
    from ..client import Client

    ctx = click.get_current_context()
    root = ctx.find_root()
    client = root.meta.get("envflow.client")
    if client is None:
        client = root.meta["envflow.client"] = Client()
    return client


def is_tty() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
