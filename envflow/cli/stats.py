"""``envflow stats``: Redis's memory by kind (runs, output, indexes, queues, deployments)."""

from __future__ import annotations

import click

from .base import emit_json, get_queries, status, table


def _size(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


@click.command("stats")
@click.option("--sample", type=click.IntRange(min=1, max=100_000), default=200, show_default=True,
              help="Runs and jobs whose size is measured (the rest are estimated from them).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(sample: int, as_json: bool) -> None:
    """Redis's memory by kind: run records, output, indexes, queues, deployments (estimated from a sample)."""
    from ..connection import wrap_errors
    from ..store.memory import report

    client = get_queries().redis
    with wrap_errors(client):
        found = report(client, sample)
    if as_json:
        emit_json({"used_memory": found.used_memory, "other": found.other,
                   "kinds": [{"name": k.name, "items": k.items, "bytes": k.bytes, "how": k.how} for k in found.kinds]})
        return
    runs = found.kinds[0].items
    rows = [[k.name, f"{k.items:,}", _size(k.bytes), _size(k.per_item) if k.items else "-",
             _size(k.bytes / runs) if runs else "-", k.how] for k in found.kinds]
    rows.append(["other", "-", _size(found.other), "-", "-", "Redis's own, RQ's workers, deployment snapshots"])
    table(["KIND", "ITEMS", "BYTES", "PER ITEM", "PER RUN", "HOW"], rows)
    status(f"Redis uses {_size(found.used_memory)} in all (INFO memory: used_memory)")
