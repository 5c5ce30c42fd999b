"""``envflow limit ...``: concurrency limits shared by runs (per tag, or a deployment's own)."""

from __future__ import annotations

import click

from .base import emit_json, get_client, printable, status, table


@click.group("limit")
def limit() -> None:
    """Concurrency limits: at most N runs RUNNING at once under a tag (or a deployment's own limit,
    deployment:<flow>/<name>, from its concurrency_limit)."""


@limit.command("set")
@click.argument("name")
@click.argument("slots", type=click.IntRange(min=0))
def set_(name: str, slots: int) -> None:
    """Allow at most SLOTS running runs of deployments tagged NAME; takes effect at once."""
    get_client().set_limit(name, slots)
    click.echo(f"limit {printable(name)}: {slots} slot{'s' if slots != 1 else ''}")


@limit.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (holders' full run ids and attempts).")
def ls(as_json: bool) -> None:
    """Each limit: its slots, how many are in use and by which runs, how many runs wait."""
    limits = get_client().limits()
    if as_json:
        emit_json([info.as_dict() for info in limits])
        return
    if not limits:
        status("no limits; set one with `envflow limit set TAG N` or a deployment's concurrency_limit")
        return
    table(["LIMIT", "SLOTS", "IN USE", "WAITING", "HELD BY"], [
        [info.name, str(info.slots), str(info.in_use), str(info.waiting),
         ", ".join(run_id[:8] for run_id in sorted(info.holders)) or "-"]
        for info in limits
    ])


@limit.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Remove the limit NAME: its waiting runs start (if their other limits let them)."""
    get_client().remove_limit(name)
    click.echo(f"removed limit {printable(name)}")
