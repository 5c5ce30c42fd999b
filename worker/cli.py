"""The worker's commands: ``envflow worker start`` (alias ``envflow agent start``)."""

from __future__ import annotations

import click

from envflow.logs import configure_logging


@click.command("start")
@click.option("--queue", "-q", "queues", multiple=True, help="Queue to serve (repeatable; default ENVFLOW_QUEUE).")
@click.option("--burst", is_flag=True, help="Run the queued runs, then exit.")
@click.option("--name", help="Worker name (default: <hostname>.<n>, stable across restarts).")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after this many runs.")
def start(queues: tuple[str, ...], burst: bool, name: str | None, max_jobs: int | None) -> None:
    """Start a worker: it takes runs from its queues and runs each flow in its environment.

    SIGTERM (docker stop) or Ctrl-C stops it gracefully: it takes no new runs and gives the
    running flow ENVFLOW_SHUTDOWN_GRACE seconds to finish before cancelling it; a second
    signal stops the flow at once.
    """
    from envflow.connection import connect, wrap_errors
    from envflow.settings import get_settings

    from .identity import acquire
    from .worker import FlowWorker

    settings = get_settings()
    configure_logging(settings.log_level)
    redis = connect(settings.redis_url)
    with wrap_errors(redis):
        redis.ping()
    try:
        identity = acquire(settings.state_dir, name)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    worker = FlowWorker(list(queues) or [settings.queue], name=identity.name, connection=redis, settings=settings)
    with wrap_errors(redis):
        # RQ's scheduler runs in the worker's maintenance thread, not in a forked process.
        worker.work(burst=burst, logging_level="WARNING", max_jobs=max_jobs)


@click.command("health")
@click.option("--name", help="Worker name to check (default: any worker of this host).")
def health(name: str | None) -> None:
    """Exit 0 when Redis answers and a live worker of this host (or NAME) is registered.

    Meant for container health checks: `envflow worker health`.
    """
    import socket

    from rq.worker import Worker

    from envflow.connection import connect, wrap_errors
    from envflow.jobs import SERIALIZER
    from envflow.settings import get_settings

    redis = connect(get_settings().redis_url)
    with wrap_errors(redis):
        redis.ping()
        workers = Worker.all(connection=redis, serializer=SERIALIZER)
    host = socket.gethostname()
    mine = [w for w in workers if (w.name == name if name else w.hostname == host)]
    if not mine:
        raise click.ClickException(f"Redis answers, but no worker {'named ' + name if name else 'of host ' + host} is registered")
    click.echo(", ".join(f"{w.name}: {w.get_state()}" for w in mine))


def register(cli: click.Group) -> None:
    """Add the worker's commands to the envflow CLI."""

    @cli.group("worker")
    def worker_group() -> None:
        """Run workers."""

    worker_group.add_command(start)
    worker_group.add_command(health)

    @cli.group("agent")
    def agent_group() -> None:
        """Alias of `envflow worker` (for users of the reference tool's `agent start`)."""

    agent_group.add_command(start)
    _register_env_commands(cli)


# Environments


def _spec_from_text(text: str):  # type: ignore[no-untyped-def]
    """An env spec from the CLI: ``venv:PATH``, ``conda:NAME``, ``conda:/prefix``, a path or a conda env name."""
    from pathlib import Path

    from envflow.models import EnvKind, EnvSpec

    spec = EnvSpec.parse(text)
    if spec.kind is EnvKind.VENV and ":" not in text.split("/")[0]:
        if (Path(text).expanduser() / "conda-meta").is_dir():
            return EnvSpec(kind=EnvKind.CONDA_PREFIX, value=text)
    return spec


def _python_version(python: str) -> str:
    import subprocess

    try:
        out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, timeout=30, check=True, env={"PATH": "/usr/bin:/bin"})
        return out.stdout.decode().strip()
    except (subprocess.SubprocessError, OSError):
        return "?"


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def env_ls(as_json: bool) -> None:
    """The environments a worker here can run flows in: named conda envs, and venvs and conda
    prefixes directly under the allowed roots (ENVFLOW_ENV_ROOTS), each with its Python version."""
    from envflow.cli.base import emit_json, table
    from envflow.settings import get_settings

    from .resolve import EnvResolver

    resolver = EnvResolver(get_settings())
    found: dict[str, dict[str, str]] = {}
    for name, prefix in resolver.named_envs().items():
        found[str(prefix.resolve())] = {"kind": "conda", "name": name, "path": str(prefix)}
    for root in resolver.allowed_roots():
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            real = str(child.resolve())
            if real in found or not child.is_dir():
                continue
            if (child / "conda-meta").is_dir():
                found[real] = {"kind": "conda-prefix", "name": "-", "path": str(child)}
            elif (child / "pyvenv.cfg").is_file():
                found[real] = {"kind": "venv", "name": "-", "path": str(child)}
    for item in found.values():
        item["python"] = _python_version(f"{item['path']}/bin/python")
    rows = sorted(found.values(), key=lambda i: (i["kind"], i["path"]))
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no environments found (roots: " + ":".join(map(str, resolver.allowed_roots())) + ")", err=True)
        return
    table(["KIND", "NAME", "PATH", "PYTHON"], [[r["kind"], r["name"], r["path"], r["python"]] for r in rows])


@click.command("check")
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def env_check(spec: str, as_json: bool) -> None:
    """Activate SPEC as a run would and show the interpreter, its version and what activation sets.

    SPEC is venv:PATH, conda:NAME, conda:/prefix, a directory (venv or conda prefix) or a conda env name.
    Values of secret-looking variables are redacted.
    """
    import os

    from envflow.cli.base import emit_json
    from envflow.settings import get_settings

    from .env_cache import EnvCache

    settings = get_settings()
    prepared = EnvCache(settings).prepare(_spec_from_text(spec), os.environ)
    variables = {k: (None if v is None else ("***" if settings.is_secret_name(k) else v))
                 for k, v in sorted(prepared.delta.items())}
    info = {"spec": str(prepared.environment.spec), "prefix": str(prepared.environment.prefix),
            "python": str(prepared.python), "version": _python_version(str(prepared.python)),
            "activation": variables}
    if as_json:
        emit_json(info)
        return
    click.echo(f"env      {info['spec']}\nprefix   {info['prefix']}\npython   {info['python']} ({info['version']})")
    click.echo("activation sets:")
    for name, value in variables.items():
        click.echo(f"  {name}={value}" if value is not None else f"  unset {name}")


@click.command("create")
@click.argument("path", type=click.Path())
@click.option("--python", "python", help="A conda env name or an interpreter path (default: this Python).")
@click.option("-r", "--requirements", type=click.Path(exists=True, dir_okay=False), help="pip install -r this file.")
def venv_create(path: str, python: str | None, requirements: str | None) -> None:
    """Make a venv at PATH with an interpreter this machine (container) has, so it keeps working when
    the directory is mounted into every worker."""
    import subprocess
    import sys
    from pathlib import Path

    from envflow.errors import EnvActivationError
    from envflow.models import EnvKind, EnvSpec
    from envflow.settings import get_settings

    from .resolve import EnvResolver

    interpreter = sys.executable
    if python:
        candidate = Path(python).expanduser()
        if "/" in python or candidate.exists():
            if not candidate.exists():
                raise click.ClickException(f"no interpreter at {candidate}")
            interpreter = str(candidate)
        else:
            env = EnvResolver(get_settings()).resolve(EnvSpec(kind=EnvKind.CONDA, value=python))
            interpreter = str(env.python)
    target = Path(path).expanduser().resolve()
    if (target / "pyvenv.cfg").exists():
        raise click.ClickException(f"{target} is already a venv; remove it first to recreate it")
    click.echo(f"creating {target} with {interpreter} ({_python_version(interpreter)})", err=True)
    done = subprocess.run([interpreter, "-m", "venv", str(target)], capture_output=True)
    if done.returncode != 0:
        raise EnvActivationError(f"`{interpreter} -m venv` failed: {done.stderr.decode(errors='replace').strip()}")
    if requirements:
        pip = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "-r", requirements])
        if pip.returncode != 0:
            raise click.ClickException(f"pip install -r {requirements} failed (exit {pip.returncode})")
    click.echo(f"venv ready: use virtualenv={str(target)!r} in deployments")


# Deployment commands that need a worker's view of the environment


@click.command("preview")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deployment_preview(name: str, as_json: bool) -> None:
    """Show what a worker here would run for NAME, without running it: interpreter, working
    directory, variables activation sets (secrets redacted), parameters."""
    import os
    from pathlib import Path

    from envflow.cli.base import emit_json, get_client

    from .env_cache import EnvCache

    client = get_client()
    record = client.get_deployment(name)
    prepared = EnvCache(client.settings).prepare(record.env, os.environ)
    secret = client.settings.is_secret_name
    info = {
        "deployment": record.name,
        "env": str(record.env),
        "python": str(prepared.python),
        "version": _python_version(str(prepared.python)),
        "working_directory": str(Path.cwd()),
        "flow": f"{record.flow_name} in {record.flow_path} ({record.flow_storage})",
        "activation": {k: (None if v is None else "***" if secret(k) else v) for k, v in sorted(prepared.delta.items())},
        "env_vars": {k: "***" if secret(k) else v for k, v in record.env_vars.items()},
        "parameters": record.parameters,
    }
    if as_json:
        emit_json(info)
        return
    for key in ("deployment", "env", "python", "version", "working_directory", "flow"):
        click.echo(f"{key.replace('_', ' '):18} {info[key]}")
    click.echo(f"{'parameters':18} {info['parameters']}")
    click.echo("activation sets:")
    for k, v in info["activation"].items():
        click.echo(f"  {k}={v}" if v is not None else f"  unset {k}")
    if info["env_vars"]:
        click.echo("deployment env (applied last):")
        for k, v in info["env_vars"].items():
            click.echo(f"  {k}={v}")


@click.command("execute")
@click.argument("name")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable).")
@click.option("--params-json", help="All parameters as one JSON object.")
def deployment_execute(name: str, pairs: tuple[str, ...], params_json: str | None) -> None:
    """Run NAME's flow here, in this Python, ignoring its env settings (for debugging). Nothing is
    queued or recorded; output goes to this terminal. Exit status 0 when the flow returns, 3 when it fails."""
    import json
    import sys

    from envflow.cli.base import get_client, status
    from envflow.cli.deployment import parse_params
    from envflow.parameters import merge_parameters

    from .local_run import execute_here

    client = get_client()
    record = client.get_deployment(name)
    params = merge_parameters(record.parameter_spec, record.parameters, parse_params(pairs, params_json),
                              record.flow_name)
    status(f"executing {record.name} here with {sys.executable} (its env, {record.env}, is ignored)")
    code, outcome = execute_here(record, client.flow_source(record), params)
    if outcome and outcome.get("ok"):
        status(f"returned {json.dumps(outcome.get('result'))}")
        sys.exit(0)
    status(f"failed: {outcome.get('error_type')}: {outcome.get('error')}" if outcome else f"exit status {code}")
    sys.exit(3)


def _register_env_commands(cli: click.Group) -> None:
    @cli.group("env")
    def env_group() -> None:
        """Environments flows run in (as this machine's workers see them)."""

    env_group.add_command(env_ls)
    env_group.add_command(env_check)

    @cli.group("venv")
    def venv_group() -> None:
        """Make venvs that work inside the workers."""

    venv_group.add_command(venv_create)

    deployment = cli.commands.get("deployment")
    if isinstance(deployment, click.Group):
        deployment.add_command(deployment_preview)
        deployment.add_command(deployment_execute)
