"""``envflow config``: the effective settings."""

from __future__ import annotations

import click

from .base import emit_json, printable


@click.command("config")
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
        shown = "(unset)" if value in ("", None) else printable(value)
        click.echo(f"{('ENVFLOW_' + name.upper()).ljust(width + 8)}  {shown}")
