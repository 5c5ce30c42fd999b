"""What ``envflow env ls|build|prune`` do with built envs (the click commands live in ``env_cli.py``)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click

from envflow.cli.base import ago, printable, status
from envflow.settings import Settings

from .builds.cache import BuiltEnv, EnvStore


class TerminalProgress:
    """A build's progress on this terminal: status lines marked ``»`` on stderr, uv's output as it is."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def status(self, text: str) -> None:
        status(printable(text))

    def output(self, code: str, data: bytes) -> None:
        stream = sys.stdout if code == "o" else sys.stderr
        stream.buffer.write(data)
        stream.flush()


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def built_rows(settings: Settings) -> list[dict[str, Any]]:
    """The built envs of this host's cache, as ``env ls`` lists them (least recently used first)."""
    rows = []
    for env in EnvStore(settings.env_cache_dir).envs():
        meta = env.meta
        rows.append({"kind": "built", "name": env.key[:12], "path": str(env.path), "python": meta.get("version", "?"),
                     "size": env.size, "last_used": env.last_used, "in_use": env.in_use, "key": env.key,
                     "requirements": meta.get("requirements", []), "requirements_digest": meta.get("requirements_digest"),
                     "base": meta.get("base"), "built_at": meta.get("built_at")})
    return rows


def build(name: str) -> None:
    """Build the env of deployment ``name`` on this host (nothing to do when it is built already)."""
    import os

    from envflow.cli.base import get_client
    from envflow.errors import ConfigError
    from envflow.models import EnvKind

    from .env_cache import EnvCache
    from .environments import flow_base

    client = get_client()
    record = client.get_deployment(name)
    if record.env.kind is not EnvKind.REQUIREMENTS:
        raise ConfigError(f"{record.name} uses {record.env}, which workers do not build; only deployments with "
                          "requirements, requirements_file or python have an env to build")
    started = time.monotonic()
    cache = EnvCache(client.settings, redis=client.redis)
    prepared = cache.prepare(record.env, flow_base(os.environ, client.settings), progress=TerminalProgress())
    env = prepared.environment
    click.echo(printable(f"env of {record.name} ready in {time.monotonic() - started:.1f}s: {env.prefix}"))


def prune(settings: Settings, everything: bool, max_bytes: int | None) -> list[BuiltEnv]:
    """Evict built envs beyond ``max_bytes`` (default ENVFLOW_ENV_CACHE_MAX_BYTES), or every one with
    ``everything``, least recently used first; envs in use stay."""
    store = EnvStore(settings.env_cache_dir)
    limit = 0 if everything else (settings.env_cache_max_bytes if max_bytes is None else max_bytes)
    evicted = store.evict(limit)
    for env in evicted:
        click.echo(printable(f"evicted {env.key[:12]}  {size_text(env.size)}  last used {ago(env.last_used)}"))
    kept = store.envs()
    in_use = [e for e in kept if e.in_use]
    total = sum(e.size for e in kept)
    status(printable(f"{len(evicted)} evicted; {len(kept)} kept ({size_text(total)}, {len(in_use)} in use) "
                     f"in {store.root}"))
    return evicted
