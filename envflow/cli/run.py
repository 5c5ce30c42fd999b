"""``envflow run ...``: list, inspect, follow, wait for and cancel runs."""

from __future__ import annotations

import sys
import time

import click

from ..redaction import redact_text
from ..states import RunState
from .base import ago, emit_json, fields, get_client, get_queries, printable, state_text, status, table
from .follow import EXIT_CODES_HELP, exit_code, follow_run, print_history

STATES = [s.value for s in RunState]


@click.group("run")
def run() -> None:
    """Inspect and control runs. IDs may be abbreviated to a unique prefix (4+ characters)."""


def _duration(row) -> str:  # type: ignore[no-untyped-def]
    """How long the latest attempt ran (until now while the run goes on); ``row`` is a ``RunSummary``."""
    if row.started_at is None:
        return "-"
    end = row.updated_at if row.state.is_final else time.time()
    return f"{end - row.started_at:.1f}s"


@run.command("ls")
@click.option("--deployment", "-d", help="Only runs of this deployment (flow-name/deployment-name).")
@click.option("--state", "-s", type=click.Choice(STATES, case_sensitive=False), help="Only runs in this state.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(deployment: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    from ..connection import wrap_errors

    queries = get_queries()
    chosen = RunState(state.upper()) if state else None
    with wrap_errors(queries.redis):
        if deployment and not queries.deployment_exists(deployment):
            get_client().get_deployment(deployment)  # says which names come close
        if as_json:
            emit_json([r.model_dump(mode="json") for r in queries.run_records(deployment, chosen, limit).runs])
            return
        rows = queries.runs(deployment, chosen, limit).runs
    if not rows:
        status("no runs match")
        return
    waiting = _waiting(queries.redis, rows)
    table(["ID", "DEPLOYMENT", "STATE", "ATTEMPT", "CREATED", "DURATION", "WORKER"], [
        [r.short_id, r.deployment, state_text(r.state.value), str(r.attempt), ago(r.created_at), _duration(r),
         r.worker or r.waiting or waiting.get((r.queue, r.route), "-")]
        for r in rows
    ])


def _waiting(redis, rows) -> dict[tuple[str, str | None], str]:  # type: ignore[no-untyped-def]
    """Per (queue, env) of the waiting runs listed: what to show while no live worker has the env."""
    from ..store import routing

    out = {}
    for r in rows:
        where = (r.queue, r.route)
        if r.state is RunState.PENDING and r.route and where not in out and not routing.capable(redis, r.queue, r.route):
            out[where] = f"waiting for a worker with {r.route}"
    return out


@run.command("inspect")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect_(run_id: str, as_json: bool) -> None:
    """Show a run: state history with timestamps, attempts, result or error."""
    record = get_client().get_run(run_id).record()
    if as_json:
        emit_json(record.model_dump(mode="json"))
        return
    import json

    rows: list[tuple[str, object]] = [
        ("id", record.id),
        ("deployment", record.deployment),
        ("state", state_text(record.state.value)),
        ("parameters", json.dumps(record.parameters)),
        ("queue", record.queue),
        *([("waiting", record.waiting)] if record.waiting else []),
        ("created", f"{ago(record.created_at)}  ({_ts(record.created_at)})"),
    ]
    if record.scheduled_for:
        rows.append(("scheduled for", _ts(record.scheduled_for) + (f"  (schedule {record.schedule})" if record.schedule else "")))
    if record.timeout:
        rows.append(("timeout", f"{record.timeout:g}s"))
    if record.has_result:
        rows.append(("result", json.dumps(record.result)))
    if record.result_error:
        rows.append(("result", record.result_error))
    if record.error or record.error_type:
        rows.append(("error", redact_text(f"{record.error_type + ': ' if record.error_type else ''}{record.error or ''}")))
    if record.reason and record.reason != record.error:
        rows.append(("reason", redact_text(record.reason)))
    fields(rows)
    click.echo(click.style("\nstates", bold=True))
    for name, ts, attempt in record.transitions:
        click.echo(f"  {_ts(ts)}  {state_text(name)}" + (f"  (attempt {attempt})" if attempt else ""))
    if record.attempts:
        click.echo(click.style("\nattempts", bold=True))
        for a in record.attempts:
            took = f"{a.ended_at - a.started_at:.1f}s" if a.started_at and a.ended_at else "-"
            detail = a.error or a.reason or ""
            click.echo(f"  #{a.n}  {state_text(a.state)}  {took}  on {printable(a.worker or '-')}"
                       f"{'  exit ' + str(a.exit_code) if a.exit_code is not None else ''}"
                       f"{'  ' + STARTS.get(a.start or '', '') if a.start else ''}"
                       f"{'  ' + printable(redact_text(detail)) if detail else ''}")


STARTS = {"fork": "(forked from a warm process)", "spare": "(in a process started ahead)", "new": "(cold start)"}


def _ts(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


@run.command("logs", epilog=EXIT_CODES_HELP)
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the run ends.")
def logs(run_id: str, follow: bool) -> None:
    """Print a run's output: stdout lines to stdout, stderr lines to stderr."""
    flow_run = get_client().get_run(run_id)
    if follow:
        sys.exit(follow_run(flow_run))
    print_history(flow_run)


@run.command("cancel")
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run: a queued run never starts; a running one is stopped (SIGTERM, then SIGKILL)."""
    client = get_client()
    flow_run = client.get_run(run_id)
    outcome = client.cancel(flow_run.id)
    messages = {
        "cancelled": "cancelled before it started",
        "requested": f"stopping it (SIGTERM, then SIGKILL after {client.settings.cancel_grace:g}s)",
        "ended": f"it had already ended ({flow_run.state.value})",
    }
    click.echo(f"run {flow_run.short_id}: {printable(messages.get(outcome, outcome))}")


@run.command("wait", epilog=EXIT_CODES_HELP)
@click.argument("run_id")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after S seconds (exit 1; the run goes on).")
def wait(run_id: str, timeout: float | None) -> None:
    """Wait for a run to end; the exit status tells how it ended."""
    flow_run = get_client().get_run(run_id)
    state = flow_run.wait(timeout)
    click.echo(state.value)
    sys.exit(exit_code(state, flow_run))
