"""``envflow config``: the effective settings; ``--check`` also reaches Redis and says what it found."""

from __future__ import annotations

import click

from .base import emit_json, printable


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True, help="Also reach Redis: its primary, replicas and, behind Sentinel, the Sentinels.")
def config(as_json: bool, check: bool) -> None:
    """Show the effective settings (ENVFLOW_* variables), secrets redacted."""
    from ..settings import Settings

    settings = Settings()
    values = settings.redacted()
    if check:
        values.update(redis_check(settings.redis_url))
    if as_json:
        emit_json(values)
        return
    width = max(len(k) for k in values)
    for name, value in values.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        label = name if name.startswith("redis ") else "ENVFLOW_" + name.upper()
        click.echo(f"{label.ljust(width + 8)}  {'(unset)' if shown in ('', None) else printable(shown)}")


def redis_check(url: str) -> dict[str, object]:
    """What Redis at ``url`` says about itself; raises QueueError when it cannot be reached."""
    from ..connection import connect, describe, wrap_errors
    from ..errors import QueueError
    from ..sentinel import SentinelURL, is_sentinel_url, topology

    found: dict[str, object] = {}
    if is_sentinel_url(url):
        seen = topology(SentinelURL.parse(url))
        found["redis sentinels reached"] = list(seen.reached)
        if seen.unreachable:
            found["redis sentinels unreachable"] = list(seen.unreachable)
        if seen.primary is None:
            raise QueueError(f"no Sentinel of {', '.join(seen.reached + seen.unreachable)} names a healthy primary "
                             "for the service; check the service name in ENVFLOW_REDIS_URL and the Sentinels' logs")
    client = connect(url, socket_connect_timeout=5, socket_timeout=5)
    with wrap_errors(client):
        info = client.info("replication")
    found["redis primary"] = describe(client) if not is_sentinel_url(url) else seen.primary
    found["redis role"] = info.get("role")
    found["redis replicas"] = [f"{v['ip']}:{v['port']} ({v.get('state')}, lag {v.get('lag')}s)"
                               for k, v in sorted(info.items()) if k.startswith("slave") and isinstance(v, dict)]
    return found
