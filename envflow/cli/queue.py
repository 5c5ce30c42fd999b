"""``envflow queue ...``: see queues and their workers; pause and resume them."""

from __future__ import annotations

import click

from .base import EnvflowGroup, emit_json, get_client, printable, status, styled, table


@click.group("queue", cls=EnvflowGroup)
def queue() -> None:
    """Inspect, pause and resume queues (a deployment's runs go to its queue)."""


@queue.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """Queued, running and scheduled runs and the workers of each queue."""
    queues = get_client().queues()
    if as_json:
        emit_json(queues)
        return
    if not queues:
        status("no queues yet")
        return
    rows = [
        [q["name"], styled("paused", fg="yellow") if q["paused"] else "active", str(q["queued"]),
         str(q["running"]), str(q["scheduled"]), ", ".join(q["workers"]) or "-"]
        for q in queues
    ]
    table(["QUEUE", "STATUS", "QUEUED", "RUNNING", "SCHEDULED", "WORKERS"], rows)


@queue.command("pause")
@click.argument("name")
def pause(name: str) -> None:
    """Start no runs from NAME; its runs wait there (running ones finish)."""
    get_client().pause_queue(name)
    click.echo(f"paused queue {printable(name)}")


@queue.command("resume")
@click.argument("name")
def resume(name: str) -> None:
    """Start runs from NAME again."""
    get_client().resume_queue(name)
    click.echo(f"resumed queue {printable(name)}")
