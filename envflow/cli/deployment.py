"""``envflow deployment ...``: register, list, inspect, delete, run, pause and resume deployments."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ..errors import DeploymentFileError, EnvflowError, ParameterError, QueueError
from .base import ago, emit_json, fail, fields, get_client, printable, problem, status, table
from .follow import EXIT_CODES_HELP, follow_run
from .lazy import LazyGroup

if TYPE_CHECKING:
    from ..models import DeploymentRecord

# Each command imports what only it needs: schedules (croniter, zoneinfo) for listings and
# inspect, deployment files (YAML, runpy) for create, parameter types for run.


@click.group("deployment", cls=LazyGroup, lazy={
    "preview": ("envflow.worker.deployment_cli:deployment_preview", "Show what a worker here would run for NAME."),
    "execute": ("envflow.worker.deployment_cli:deployment_execute", "Run NAME's flow here, in this Python."),
})
def deployment() -> None:
    """Register and run deployments (a flow plus the environment its runs use)."""


def redact_env(record: DeploymentRecord) -> dict[str, str | None]:
    return get_client().settings.redactor.mapping(record.env_vars)


def redacted_hooks(record: DeploymentRecord) -> list[dict[str, Any]]:
    """The deployment's hooks as shown: webhook URLs with their credentials hidden."""
    text = get_client().settings.redactor.text
    return [{**h.model_dump(), "webhook": text(h.webhook) if h.webhook else None} for h in record.hooks]


def next_run(record: DeploymentRecord, now: float | None = None) -> float | None:
    if not record.schedules:
        return None
    from .. import schedules

    now = time.time() if now is None else now
    return min(schedules.next_slot(s, now) for s in record.schedules)


def describe_env(record: DeploymentRecord) -> str:
    return str(record.env)


def built_env_rows(client: Any, record: DeploymentRecord) -> list[tuple[str, str]]:
    """``inspect``'s rows for an env the workers build: its base interpreter and what it installs."""
    from ..models import EnvKind

    if record.env.kind is not EnvKind.REQUIREMENTS:
        return []
    rows = [("python", record.env.python or "the worker's"),
            ("requirements", ", ".join(record.env.requirements) or "-")]
    digest = record.env.requirements_digest
    if digest:
        text = client.requirements_text(record)
        lines = [line.strip() for line in (text or "").splitlines() if line.strip() and not line.startswith("#")]
        shown = "; ".join(lines) if text is not None else "missing from Redis: create the deployment again"
        rows.append(("requirements file", f"sha256:{digest[:12]}: {shown}"))
    return rows


@deployment.command("create")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def create(files: tuple[str, ...]) -> None:
    """Register every deployment defined in FILES (Python or YAML).

    Invalid deployments are reported one by one, with file and line; the valid ones are
    registered anyway. Registering again updates a deployment.
    """
    from ..deployment_files import load_file

    client = get_client()
    errors = 0
    created = []
    for path in files:
        try:
            loaded = load_file(path)
        except DeploymentFileError as e:  # this file only: the next ones are still registered
            errors += 1
            problem("invalid", str(e))
            continue
        for message in loaded.errors:
            errors += 1
            problem("invalid", message)
        for item in loaded.deployments:
            try:
                record = client.create_deployment(item)
            except QueueError:
                raise
            except EnvflowError as e:  # this deployment only: the rest of the file is still registered
                errors += 1
                problem("invalid", f"{item.defined_at}: {e}")
                continue
            where = "source stored" if record.flow_storage == "source" else f"path {record.flow_path}"
            click.echo(f"registered {click.style(printable(record.name), bold=True)}  env "
                       f"{printable(describe_env(record))}  queue {printable(record.queue)}  "
                       f"({printable(where)}; {printable(item.defined_at)})")
            created.append(record)
    for record in created:  # a typo in an env path is best caught here, not when its first run waits
        lacking = client.lacking_env(record)
        if lacking:
            problem("warning", f"{record.name}: {printable(lacking)}")
    if errors:
        fail(f"{errors} deployment{'s' if errors > 1 else ''} not registered", code=1)


@deployment.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List deployments, with their environment, queue and next scheduled run."""
    client = get_client()
    records = client.deployments()
    paused = client.paused_deployments()
    if as_json:
        emit_json([
            {**r.model_dump(exclude={"env_vars", "hooks"}), "env_vars": redact_env(r), "hooks": redacted_hooks(r), "paused": r.name in paused,
             "next_run": next_run(r)} for r in records
        ])
        return
    if not records:
        status("no deployments yet: `envflow deployment create FILE`")
        return
    rows = []
    for r in records:
        nxt = next_run(r)
        when = "paused" if r.name in paused else (ago(nxt) if nxt else "-")
        rows.append([r.name, describe_env(r), r.queue, when, ",".join(r.tags) or "-", ago(r.updated_at)])
    table(["NAME", "ENV", "QUEUE", "NEXT RUN", "TAGS", "UPDATED"], rows)


@deployment.command("inspect")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect_(name: str, as_json: bool) -> None:
    """Show everything about one deployment (secret-looking env values redacted)."""
    from .. import schedules

    client = get_client()
    record = client.get_deployment(name)
    paused = record.name in client.paused_deployments()
    now = time.time()
    upcoming = sorted(t for s in record.schedules for t in schedules.upcoming(s, now, 3))
    data: dict[str, Any] = {**record.model_dump(exclude={"env_vars", "hooks"}), "env_vars": redact_env(record),
                            "hooks": redacted_hooks(record), "paused": paused, "next_runs": upcoming[:3]}
    built = built_env_rows(client, record)
    if built:
        data["requirements_file"] = client.requirements_text(record)
    if as_json:
        emit_json(data)
        return
    rows = [
        ("name", record.name),
        ("flow", f"{record.flow_name}  ({record.flow_path})"),
        ("storage", record.flow_storage + (f" sha256:{record.source_digest[:12]}" if record.source_digest else "")),
        ("env", describe_env(record)),
        *built,
        ("queue", record.queue),
        ("parameters", json.dumps(record.parameters)),
        ("signature", ", ".join(p["name"] + (f": {p['annotation']}" if p.get("annotation") else "")
                                + ("" if p["required"] else "=" + p.get("default", "…"))
                                for p in record.parameter_spec) or "-"),
        ("env vars", ", ".join(f"{k}={v}" for k, v in redact_env(record).items()) or "-"),
        ("tags", ", ".join(record.tags) or "-"),
        ("timeout", f"{record.timeout:g}s" if record.timeout else "none"),
        ("retries", f"{record.retries}" + (f" (delay {record.retry_delay})" if record.retry_delay else "")),
        ("concurrency limit", (f"{record.concurrency_limit}" if record.concurrency_limit else "none")
         + ("; a run that finds a limit full is cancelled" if record.on_limit == "cancel" else "")),
        ("stream output", "yes" if record.stream_output else "no"),
        ("preload", ", ".join(record.preload) or "-"),
        ("warm", "from worker start" if record.warm else "after a run (ENVFLOW_WARM_IDLE)"),
        ("schedules", "; ".join(schedules.describe(s) for s in record.schedules) or "none"),
        ("missed runs", record.missed_runs if record.schedules else "-"),
        ("hooks", "; ".join(f"on {','.join(h['on'])}: " + (f"webhook {h['webhook']}" if h["webhook"] else f"run {h['run']}")
                            for h in redacted_hooks(record)) or "none"),
        ("late after", f"{record.late_after:g}s" if record.late_after else "-"),
        *skipped_rows(client, record),
        ("paused", "yes" if paused else "no"),
        ("next runs", ", ".join(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in upcoming[:3]) or "-"),
        ("defined at", record.defined_at or "-"),
        ("updated", ago(record.updated_at)),
    ]
    fields(rows)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):  # nan passes FloatRange; 1e400 reads as inf
        raise click.BadParameter(f"{value} is not a finite number of seconds", ctx, param)
    return value
def skipped_rows(client: Any, record: DeploymentRecord) -> list[tuple[str, str]]:
    """``inspect``'s row for the slots the scheduler skipped while a run of the deployment waited for its env."""
    from ..store import keys

    raw = client.redis.get(keys.skipped_slots(record.name)) if record.schedules else None
    if raw is None:
        return []
    note = json.loads(raw)
    span = " to ".join(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in sorted({note["first"], note["last"]}))
    return [("skipped slots", f"{note['count']} ({span}): run {note['run'][:8]} {note['reason']}")]


@deployment.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Remove a deployment (its past runs stay until they expire)."""
    get_client().delete_deployment(name)
    click.echo(f"deleted {printable(name)}")


@deployment.command("pause")
@click.argument("name")
def pause(name: str) -> None:
    """Stop scheduling runs of NAME (on-demand runs still work)."""
    get_client().pause_deployment(name)
    click.echo(f"paused {printable(name)}")


@deployment.command("resume")
@click.argument("name")
def resume(name: str) -> None:
    """Schedule runs of NAME again."""
    get_client().resume_deployment(name)
    click.echo(f"resumed {printable(name)}")


def parse_params(pairs: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    """``--params-json`` first, then each ``--param key=value`` (JSON or text: see TextParameter)."""
    from ..parameters import TextParameter, json_object

    params: dict[str, Any] = {}
    if params_json:
        params.update(json_object(params_json, "--params-json"))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParameterError(f"--param {pair!r}: expected key=value")
        try:
            params[key] = TextParameter(value)
        except ParameterError:
            raise ParameterError(f"--param {key}: the value is nested too deeply") from None
    return params


@deployment.command("run", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A parameter (repeatable); VALUE is parsed as JSON when it is JSON, else taken as text.")
@click.option("--params-json", help="All parameters as one JSON object.")
@click.option("--follow", "-f", is_flag=True, help="Stream the run's output here until it ends.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), callback=_finite,
              help="Stop the run after S seconds.")
def run_(name: str, pairs: tuple[str, ...], params_json: str | None, follow: bool, timeout: float | None) -> None:
    """Start a run of NAME (flow-name/deployment-name) now.

    With --follow, the flow's stdout goes to stdout and its stderr to stderr, verbatim;
    envflow's own status lines go to stderr, marked with '»'.
    """
    import warnings

    from ..errors import EnvflowWarning

    client = get_client()
    changed = client.source_changed(client.get_deployment(name))
    if changed:
        problem("warning", changed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnvflowWarning)  # said below, as a status line
        run = client.run(name, parse_params(pairs, params_json), timeout=timeout)
    if not follow:
        click.echo(run.id)
        status(f"run {run.short_id} of {printable(name)} queued; follow it with `envflow run logs {run.short_id} --follow`")
    else:
        status(f"run {run.short_id} of {printable(name)} queued; streaming its output (Ctrl-C to detach)")
    if run.waiting and not follow:  # a follower hears it from the run itself
        status(printable(run.waiting))
    if follow:
        sys.exit(follow_run(run))
