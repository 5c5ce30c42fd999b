"""The ``envflow`` entry point. Service packages add their commands through the
``envflow.cli`` entry point group, so this package never imports them."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import click

from .base import EnvflowGroup, emit_json, printable


@click.group(cls=EnvflowGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="envflow")
def cli(debug: bool) -> None:
    """Run Python flows in the conda env or venv each one needs, on RQ workers, with live output.

    \b
    Quick start:
      envflow up                                  # Redis (if none), scheduler and a worker
      envflow deployment create ./example-deployment.py
      envflow deployment run my-flow/example --follow

    Settings come from ENVFLOW_* variables; `envflow config` shows them.
    """
    if debug:
        logging.basicConfig(level=logging.DEBUG)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config(as_json: bool) -> None:
    """Show the effective settings (ENVFLOW_* variables), secrets redacted."""
    from ..settings import Settings

    values = Settings().redacted()
    if as_json:
        emit_json(values)
        return
    width = max(len(k) for k in values)
    for name, value in values.items():
        click.echo(f"{('ENVFLOW_' + name.upper()).ljust(width + 8)}  {printable(value)}")


def _load_plugins() -> None:
    from . import deployment, queue, run, up  # noqa: F401 - they register their groups on `cli`

    for ep in entry_points(group="envflow.cli"):
        ep.load()(cli)


_load_plugins()


def main() -> None:
    cli(prog_name="envflow")
