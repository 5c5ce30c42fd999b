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
    """Print what a run's history holds now, saying where its caps dropped lines."""
    from ..output import Entry
    from ..waits import Waiting

    last: tuple[int, int] | None = None
    for record in run.records(timeout=0):
        if isinstance(record, Waiting):
            status(printable(record.message))
            continue
        if isinstance(record, Entry):
            _say_if_trimmed(last, record)
            print_lines(record)
        last = record.next_id


def follow_run(run: FlowRun, *, interactive_cancel: bool = True) -> int:
    """Stream a run's output until it ends; return the exit code of its final state."""
    from ..output import AttemptEnd, Entry
    from ..waits import Waiting

    started = time.monotonic()
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
                    status(f"run {run.short_id} {state_text(record.state)} after {time.monotonic() - started:.1f}s")
                    return exit_code(RunState(record.state), run)
                status(f"attempt {record.attempt} ended {state_text(record.state)}; the run will be retried")
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
            status(printable(redact_text(f"{record.error_type + ': ' if record.error_type else ''}{detail}")))
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
