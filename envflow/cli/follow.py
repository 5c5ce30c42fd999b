"""Printing a run's output as it happens, and the exit codes that reflect its end.

The output's format is imported when output is printed: commands that only list or cite the
exit codes (``run ls``, the ``--help`` epilogs) do not load it.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING

import click

from ..redaction import redact_text
from ..states import RunState
from .base import printable, state_text, status

if TYPE_CHECKING:
    from ..flow_run import FlowRun
    from ..output import Entry

# Exit codes of commands that wait for a run (documented in `envflow deployment run --help`).
EXIT_CODES = {
    RunState.COMPLETED: 0,
    RunState.FAILED: 3,
    RunState.CRASHED: 4,
    RunState.TIMED_OUT: 5,
    RunState.CANCELLED: 6,
}
EXIT_CODES_HELP = "Exit status: 0 completed, 3 failed, 4 crashed, 5 timed out, 6 cancelled, 130 detached (Ctrl-C)."
DETACHED = 130


def print_lines(entry: Entry) -> None:
    """Print an entry's lines, the ``OutputLine``s ``FlowRun.follow`` yields, verbatim: stdout's to
    stdout, stderr's to stderr."""
    out = sys.stdout if entry.stream == "o" else sys.stderr
    for line in entry.lines():
        out.write(line.text if line.partial else line.text + "\n")
    out.flush()


def print_history(run: FlowRun) -> None:
    """Print what a run's history holds now, saying where its caps dropped lines and where each attempt ended."""
    from ..output import AttemptEnd, Entry
    from ..waits import Waiting

    last: tuple[int, int] | None = None
    for record in run.records(timeout=0):
        if isinstance(record, Waiting):
            status(printable(record.message))
            continue
        if isinstance(record, Entry):
            _say_if_trimmed(last, record)
            print_lines(record)
        elif isinstance(record, AttemptEnd) and not record.final:
            status(retry_line(run, record.attempt))
        last = record.next_id


def retry_line(run: FlowRun, attempt: int) -> str:
    """What ended an attempt that will be retried: its error, the delay and the attempts left."""
    record = run.record()
    ended = next((a for a in record.attempts if a.n == attempt), None)
    if ended is None:
        return f"attempt {attempt} ended; the run will be retried"
    detail = ended.error or ended.reason
    error = f" ({ended.error_type + ': ' if ended.error_type else ''}{detail})" if detail or ended.error_type else ""
    due, ended_at = record.scheduled_for, ended.ended_at or time.time()
    delay = due - ended_at if due and due > ended_at else 0  # a retry's due time (a schedule's slot is earlier)
    left = max(record.retries + 1 - attempt, 0)
    when = f"in {delay:.0f}s" if delay >= 1 else "now"
    return printable(redact_text(f"attempt {attempt} {ended.state}{error}; retrying {when}, "
                                 f"{left} attempt{'s' if left != 1 else ''} left"))


def end_line(run: FlowRun, state: str) -> str:
    """How the run ended: the time its last attempt ran (against its timeout) and the time it waited first."""
    record = run.record()
    last = record.attempts[-1] if record.attempts else None
    started = next((a.started_at for a in record.attempts if a.started_at), None)
    parts = []
    if last is not None and last.started_at and last.ended_at:
        ran = f"ran {last.ended_at - last.started_at:.1f}s"
        parts.append(ran + (f" of its {record.timeout:g}s timeout" if record.timeout else ""))
    if started is not None:
        parts.append(f"waited {max(started - record.created_at, 0):.1f}s to start")
    elif record.updated_at:
        parts.append(f"never started: waited {max(record.updated_at - record.created_at, 0):.1f}s")
    return f"run {run.short_id} {state_text(state)}" + (f": {', '.join(parts)}" if parts else "")


def follow_run(run: FlowRun, *, interactive_cancel: bool = True) -> int:
    """Stream a run's output until it ends; return the exit code of its final state."""
    from ..output import AttemptEnd, Entry
    from ..waits import Waiting

    # Ctrl-C detaches even when a parent shell started us with SIGINT ignored (a background job).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    last: tuple[int, int] | None = None
    try:
        for record in run.records():
            if isinstance(record, Waiting):  # said once per reason, as soon as it is known
                status(printable(record.message))
                continue
            if isinstance(record, Entry):
                _say_if_trimmed(last, record)
                print_lines(record)
            last = record.next_id
            if isinstance(record, AttemptEnd):
                if record.final:
                    status(end_line(run, record.state))
                    return exit_code(RunState(record.state), run)
                status(retry_line(run, record.attempt))
    except KeyboardInterrupt:
        return _interrupted(run, interactive_cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
    return exit_code(run.state, run)


def _say_if_trimmed(last: tuple[int, int] | None, entry: Entry) -> None:
    """Say where the history's caps dropped lines before ``entry`` (``last``: where the previous record ended)."""
    from ..output import dropped_before

    dropped = dropped_before(last, entry)
    if dropped is not None:
        status(dropped)


def exit_code(state: RunState, run: FlowRun) -> int:
    if state is not RunState.COMPLETED:
        record = run.record()
        detail = record.error or record.reason
        if detail:
            text = redact_text(f"{record.error_type + ': ' if record.error_type else ''}{detail}")
            for line in text.split("\n"):  # each line as a line, not with a literal \n (a \r stays shown)
                status(printable(line))
    return EXIT_CODES.get(state, 1)


def _interrupted(run: FlowRun, interactive_cancel: bool) -> int:
    click.echo("", err=True)
    if interactive_cancel and sys.stdin.isatty() and sys.stderr.isatty():
        try:
            if click.confirm(f"Cancel run {run.short_id} too? (No detaches; the run goes on)", default=False, err=True):
                outcome = run.cancel()
                status(f"run {run.short_id}: cancel {printable(outcome)}")
                return DETACHED
        except (KeyboardInterrupt, click.Abort):
            pass
    status(f"detached; the run goes on: `envflow run logs {run.short_id} --follow` to follow it again")
    return DETACHED
