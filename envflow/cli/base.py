"""What every command shares: error handling, output helpers, the client.

Everything envflow prints about runs, deployments, envs and settings holds text that others
wrote (flows' error messages, deployment fields, worker names, anything in Redis). It goes
through :func:`printable` here, which shows control characters escaped, so no value can move
the cursor, retitle the terminal or fake a line. Only a flow's own output, under ``--follow``
and ``run logs``, is printed verbatim.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from ..errors import EnvflowError
from ..redaction import redact_text
from ..states import LOOKS

STATE_COLORS = {state.value: look.terminal for state, look in LOOKS.items()}


class EnvflowGroup(click.Group):
    """A group whose commands turn envflow errors into one-line messages and exit codes, and whose
    listing shows each command's whole one-line summary (wrapped, not cut mid-phrase as click does)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary(command)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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


def summary(command: click.Command) -> str:
    """A command's one-line summary: its short_help, else the first sentence of its help, whole."""
    return command.get_short_help_str(limit=1000)


# C0 and C1 controls, DEL, line/paragraph separators and the bidi controls that reorder text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


class Styled(str):
    """Text envflow formatted itself (its own colors, values already escaped): printed as is."""


def printable(value: object) -> str:
    """``value`` as text safe to print: control characters (escape sequences, carriage returns,
    newlines, bidi overrides) shown escaped (``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``)."""
    if isinstance(value, Styled):
        return value
    return _CONTROL.sub(_escaped, str(value))


def styled(value: object, **style: Any) -> Styled:
    """``value``, escaped, in envflow's colors (``click.style`` arguments)."""
    return Styled(click.style(printable(value), **style))


def printable_lines(message: str) -> str:
    """A message of one or more lines, each line escaped: envflow's line breaks stay."""
    return "\n".join(printable(line) for line in message.split("\n"))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (control characters escaped, credentials in URLs hidden) and exit."""
    click.echo(click.style("error: ", fg="red", bold=True) + printable_lines(redact_text(message)), err=True)
    sys.exit(code)


def problem(label: str, message: str) -> None:
    """A problem that does not stop the command (``invalid: file:line: field: ...``), on stderr."""
    click.echo(click.style(f"{label}: ", fg="red", bold=True) + printable_lines(redact_text(message)), err=True)


def status(message: str) -> None:
    """envflow's own status lines: stderr, dimmed and marked, apart from a flow's output.

    ``message`` is envflow's text: values in it must come through :func:`printable` or :func:`styled`.
    """
    click.echo(click.style(f"» {message}", fg="bright_black"), err=True)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def state_text(state: str) -> Styled:
    return styled(state, fg=STATE_COLORS.get(state, "white"))


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


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print an aligned table; cells are escaped (see :func:`printable`), ``Styled`` ones keep their colors."""
    if not rows:
        return
    cells = [[printable(c) for c in row] for row in rows]
    plain = [[click.unstyle(str(c)) for c in row] for row in cells]
    widths = [max(len(h), *(len(r[i]) for r in plain)) for i, h in enumerate(headers)]
    click.echo("  ".join(click.style(h.ljust(w), bold=True) for h, w in zip(headers, widths)).rstrip())
    for row, prow in zip(cells, plain):
        click.echo("  ".join(str(c) + " " * (w - len(p)) for c, p, w in zip(row, prow, widths)).rstrip())


def fields(rows: Sequence[tuple[str, object]]) -> None:
    """Print ``key  value`` lines, keys aligned and bold, values escaped (``Styled`` ones kept)."""
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{click.style(key.ljust(width), bold=True)}  {printable(value)}")


def get_client():  # type: ignore[no-untyped-def]
    from ..client import Client

    ctx = click.get_current_context()
    root = ctx.find_root()
    client = root.meta.get("envflow.client")
    if client is None:
        client = root.meta["envflow.client"] = Client()
    return client


def get_queries():  # type: ignore[no-untyped-def]
    """What listings read (``envflow/store/queries.py``), without the full client: a command that only
    lists pays for redis-py and nothing much else (no pydantic, no RQ)."""
    from ..connection import connect
    from ..redis_url import redis_url
    from ..store.queries import Queries

    root = click.get_current_context().find_root()
    client = root.meta.get("envflow.client")
    queries = root.meta.get("envflow.store.queries")
    if queries is None:
        queries = root.meta["envflow.store.queries"] = Queries(client.redis if client else connect(redis_url()))
    return queries
