"""``envflow deployment preview|execute``: a deployment seen and run from this machine."""

from __future__ import annotations

import click

from .env_cli import python_version


@click.command("preview")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deployment_preview(name: str, as_json: bool) -> None:
    """Show what a worker here would run for NAME, without running it: interpreter, working
    directory, variables activation sets (secrets redacted), parameters."""
    import os
    from pathlib import Path

    from envflow.cli.base import emit_json, get_client, printable

    from .env_cache import EnvCache
    from .environments import flow_base

    client = get_client()
    record = client.get_deployment(name)
    prepared = EnvCache(client.settings).prepare(record.env, flow_base(os.environ, client.settings), record.env_vars)
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
    }
    if as_json:
        emit_json(info)
        return
    for key in ("deployment", "env", "python", "version", "working_directory", "flow"):
        click.echo(f"{key.replace('_', ' '):18} {printable(info[key])}")
    click.echo(f"{'parameters':18} {printable(info['parameters'])}")
    click.echo(f"{'preload':18} {printable(', '.join(record.preload) or '-')}{'  (warm from worker start)' if record.warm else ''}")
    click.echo("activation sets:")
    for k, v in info["activation"].items():
        click.echo("  " + printable(f"{k}={v}" if v is not None else f"unset {k}"))
    if info["env_vars"]:
        click.echo("deployment env (applied last):")
        for k, v in info["env_vars"].items():
            click.echo(f"  {printable(k)}={printable(v)}")


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
