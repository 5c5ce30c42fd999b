"""``envflow deployment preview|execute``: a deployment seen and run from this machine."""

from __future__ import annotations

from typing import Any

import click

from envflow.models import DeploymentRecord

from .env_cli import python_version


@click.command("preview")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deployment_preview(name: str, as_json: bool) -> None:
    """Show what a worker here would run for NAME, without running it: interpreter, working
    directory, variables activation sets (secrets redacted), parameters; and which live workers
    can run it (those that have its env)."""
    import os
    from pathlib import Path

    from envflow.cli.base import emit_json, get_client, printable
    from envflow.models import EnvKind

    from .env_cache import EnvCache
    from .environments import flow_base

    client = get_client()
    record = client.get_deployment(name)
    capable = client.capable_workers(record)
    changed = client.source_changed(record)
    if changed:
        click.echo(f"warning: {printable(changed)}", err=True)
    if not capable:
        click.echo(f"no live worker can run it: {printable(client.why_waiting(record))}", err=True)
    if record.env.kind is EnvKind.REQUIREMENTS and not _show_built(client, record, as_json):
        return
    prepared = EnvCache(client.settings, redis=client.redis).prepare(
        record.env, flow_base(os.environ, client.settings), record.env_vars)
    redactor = client.settings.redactor
    info = {
        "deployment": record.name,
        "env": str(record.env),
        "python": str(prepared.python),
        "version": python_version(str(prepared.python)),
        "working_directory": str(Path.cwd()),
        "flow": f"{record.flow_name} in {record.flow_path} ({record.flow_storage})",
        "activation": redactor.mapping(dict(sorted(prepared.delta.items()))),
        "env_vars": redactor.mapping(record.env_vars),
        "parameters": record.parameters,
        "preload": record.preload,
        "warm": record.warm,
        "workers": capable,
    }
    if as_json:
        emit_json(info)
        return
    for key in ("deployment", "env", "python", "version", "working_directory", "flow"):
        click.echo(f"{key.replace('_', ' '):18} {printable(info[key])}")
    click.echo(f"{'live workers':18} {printable(', '.join(capable) or 'none has its env')}")
    click.echo(f"{'parameters':18} {printable(info['parameters'])}")
    click.echo(f"{'preload':18} {printable(', '.join(record.preload) or '-')}{'  (warm from worker start)' if record.warm else ''}")
    click.echo("activation sets:")
    for k, v in info["activation"].items():
        click.echo("  " + printable(f"{k}={v}" if v is not None else f"unset {k}"))
    if info["env_vars"]:
        click.echo("deployment env (applied last):")
        for k, v in info["env_vars"].items():
            click.echo(f"  {printable(k)}={printable(v)}")


def _show_built(client: Any, record: DeploymentRecord, as_json: bool) -> bool:
    """What ``preview`` says of an env the workers build: what it installs, its key and whether this host
    has it. True when it is built here (the preview goes on to its activation); it is never built here."""
    from envflow.cli.base import emit_json, printable

    from .environments.built import BuiltEnvironment
    from .resolve import EnvResolver

    env = BuiltEnvironment.locate(record.env, EnvResolver(client.settings, redis=client.redis))
    assert isinstance(env, BuiltEnvironment)
    text = client.requirements_text(record)
    info = {"deployment": record.name, "env": str(record.env), "base python": f"{env.base.path} ({env.base.version_text})",
            "requirements": list(record.env.requirements),
            "requirements file": [ln.strip() for ln in (text or "").splitlines() if ln.strip()],
            "built env": f"{env.key[:12]} at {env.prefix}", "built here": env.store.exists(env.key)}
    if info["built here"]:
        if not as_json:
            click.echo(f"{'built env':18} {printable(info['built env'])}")
        return True
    if as_json:
        emit_json(info)
        return False
    for key, value in info.items():
        if key == "built here":
            continue
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key:18} {printable(shown if shown != '' else '-')}")
    click.echo(printable(f"not built on this host yet: its first run builds it, or `envflow env build {record.name}`"))
    return False


@click.command("execute")
@click.argument("name")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable).")
@click.option("--params-json", help="All parameters as one JSON object.")
def deployment_execute(name: str, pairs: tuple[str, ...], params_json: str | None) -> None:
    """Run NAME's flow here, in this Python, ignoring its env settings (for debugging). Nothing is
    queued or recorded; output goes to this terminal. Exit status 0 when the flow returns, 3 when it fails."""
    import json
    import sys

    from envflow.cli.base import get_client, printable, status
    from envflow.cli.deployment import parse_params
    from envflow.parameters import merge_parameters
    from envflow.redaction import redact_text

    from .local_run import execute_here

    client = get_client()
    record = client.get_deployment(name)
    params = merge_parameters(record.parameter_spec, record.parameters, parse_params(pairs, params_json),
                              record.flow_name)
    status(printable(f"executing {record.name} here with {sys.executable} (its env, {record.env}, is ignored)"))
    code, outcome = execute_here(record, client.flow_source(record), params)
    if outcome and outcome.get("ok"):
        status(printable(f"returned {json.dumps(outcome.get('result'))}"))
        sys.exit(0)
    failed = f"failed: {outcome.get('error_type')}: {outcome.get('error')}" if outcome else f"exit status {code}"
    status(printable(redact_text(failed)))
    sys.exit(3)
