"""``envflow env ls|check`` and ``envflow venv create``: environments as this machine's workers see them."""

from __future__ import annotations

from typing import Any

import click

from envflow.cli.base import EnvflowGroup


def spec_from_text(text: str):  # type: ignore[no-untyped-def]
    """An env spec from the CLI: ``venv:PATH``, ``conda:NAME``, ``conda:/prefix``, a path or a conda env name."""
    from pathlib import Path

    from envflow.models import EnvSpec

    from .environments import detect

    spec = EnvSpec.parse(text)
    if text.startswith(("/", "~", ".")):  # a bare path: its markers say its kind
        kind = detect(Path(text).expanduser())
        if kind is not None and kind.path_kind is not None:
            return EnvSpec(kind=kind.path_kind, value=text)
    return spec


def python_version(python: str) -> str:
    import subprocess

    try:
        out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, timeout=30, check=True, env={"PATH": "/usr/bin:/bin"})
        return out.stdout.decode().strip()
    except (subprocess.SubprocessError, OSError):
        return "?"


@click.group("env", cls=EnvflowGroup)
def env() -> None:
    """Environments flows run in (as this machine's workers see them)."""


@click.group("venv", cls=EnvflowGroup)
def venv() -> None:
    """Make venvs that work inside the workers."""


@env.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "fleet", is_flag=True, help="The envs every live worker has (as deployments name them), "
              "from what the workers advertise, instead of what a worker on this machine would find.")
def env_ls(as_json: bool, fleet: bool) -> None:
    """The environments a worker here can run flows in: named conda envs, venvs and conda prefixes
    directly under the allowed roots (ENVFLOW_ENV_ROOTS), each with its Python version, and the envs
    built from requirements in this host's cache (ENVFLOW_ENV_CACHE), with size and last use.
    With --all: which live worker has which env that deployments name."""
    from envflow.cli.base import ago, emit_json, printable, table
    from envflow.settings import get_settings

    from .built_cli import built_rows, size_text

    if fleet:
        _fleet_envs(as_json)
        return
    from .environments import detect
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
            kind = detect(child) if real not in found and child.is_dir() else None
            if kind is not None:
                found[real] = {"kind": kind.label, "name": "-", "path": str(child)}
    for item in found.values():
        item["python"] = python_version(f"{item['path']}/bin/python")
    rows: list[dict[str, Any]] = sorted(found.values(), key=lambda i: (i["kind"], i["path"]))
    rows += reversed(built_rows(resolver.settings))  # most recently used first
    if as_json:
        emit_json(rows)
        return
    if not rows:
        roots = ":".join(map(str, resolver.allowed_roots()))
        click.echo(f"no environments found (roots: {printable(roots)})", err=True)
        return
    table(["KIND", "NAME", "PATH", "PYTHON", "SIZE", "LAST USED"],
          [[r["kind"], r["name"], r["path"], r["python"], size_text(r["size"]) if "size" in r else "-",
            (ago(r["last_used"]) + (" (in use)" if r["in_use"] else "")) if "last_used" in r else "-"] for r in rows])


@env.command("build")
@click.argument("deployment")
def env_build(deployment: str) -> None:
    """Build DEPLOYMENT's env (requirements, python) in this host's env cache, as its first run would:
    for images and CI, so that no run waits for it. Does nothing when it is built already."""
    from .built_cli import build

    build(deployment)


@env.command("prune")
@click.option("--all", "everything", is_flag=True, help="Evict every built env that no run uses.")
@click.option("--max-bytes", type=int, help="Evict down to this size (default: ENVFLOW_ENV_CACHE_MAX_BYTES).")
def env_prune(everything: bool, max_bytes: int | None) -> None:
    """Evict built envs, least recently used first, down to the cache's size limit; envs that runs
    use now are kept."""
    from envflow.settings import get_settings

    from .built_cli import prune

    prune(get_settings(), everything, max_bytes)


def _fleet_envs(as_json: bool) -> None:
    from envflow.cli.base import emit_json, get_client, printable, table

    rows = [{"worker": w["name"], "queues": w["queues"], "env": key, **info}
            for w in get_client().workers() for key, info in sorted(w.get("envs", {}).items())]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no live worker has an env that a deployment names", err=True)
        return
    table(["ENV", "WORKER", "QUEUES", "PATH", "PYTHON"],
          [[printable(r["env"]), printable(r["worker"]), printable(",".join(r["queues"])), printable(r["path"]),
            printable(r["python"])] for r in rows])


@env.command("check")
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def env_check(spec: str, as_json: bool) -> None:
    """Activate SPEC as a run would and show the interpreter, its version and what activation sets.

    SPEC is venv:PATH, conda:NAME, conda:/prefix, a directory (venv or conda prefix) or a conda env name.
    Values of secret-looking variables are redacted.
    """
    import os

    from envflow.cli.base import emit_json, printable
    from envflow.settings import get_settings

    from .env_cache import EnvCache
    from .environments import flow_base

    settings = get_settings()
    prepared = EnvCache(settings).prepare(spec_from_text(spec), flow_base(os.environ, settings))
    variables = settings.redactor.mapping(dict(sorted(prepared.delta.items())))
    info = {"spec": str(prepared.environment.spec), "prefix": str(prepared.environment.prefix),
            "python": str(prepared.python), "version": python_version(str(prepared.python)),
            "activation": variables, "warnings": prepared.environment.warnings}
    if as_json:
        emit_json(info)
        return
    for key in ("spec", "prefix"):
        click.echo(f"{key.replace('spec', 'env'):8} {printable(info[key])}")
    click.echo(f"python   {printable(info['python'])} ({printable(info['version'])})")
    for warning in prepared.environment.warnings:
        click.echo(f"warning  {printable(warning)}")
    click.echo("activation sets:")
    for name, value in variables.items():
        click.echo("  " + printable(f"{name}={value}" if value is not None else f"unset {name}"))


@venv.command("create")
@click.argument("path", type=click.Path())
@click.option("--python", "python",
              help="A conda env name, an interpreter path or a version such as 3.12 (default: this Python).")
@click.option("-r", "--requirements", type=click.Path(exists=True, dir_okay=False), help="pip install -r this file.")
def venv_create(path: str, python: str | None, requirements: str | None) -> None:
    """Make a venv at PATH with an interpreter this machine (container) has, so it keeps working when
    the directory is mounted into every worker."""
    import subprocess
    from pathlib import Path

    from envflow.cli.base import printable
    from envflow.errors import EnvActivationError
    from envflow.settings import get_settings

    from .environments.interpreters import find_interpreter
    from .resolve import EnvResolver

    interpreter = str(find_interpreter(python, EnvResolver(get_settings())).path)
    target = Path(path).expanduser().resolve()
    if (target / "pyvenv.cfg").exists():
        raise click.ClickException(f"{printable(target)} is already a venv; remove it first to recreate it")
    click.echo(printable(f"creating {target} with {interpreter} ({python_version(interpreter)})"), err=True)
    done = subprocess.run([interpreter, "-m", "venv", str(target)], capture_output=True)
    if done.returncode != 0:
        raise EnvActivationError(f"`{interpreter} -m venv` failed: {done.stderr.decode(errors='replace').strip()}")
    if requirements:
        pip = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "-r", requirements])
        if pip.returncode != 0:
            raise click.ClickException(f"pip install -r {requirements} failed (exit {pip.returncode})")
    click.echo(printable(f"venv ready: use virtualenv={str(target)!r} in deployments"))
