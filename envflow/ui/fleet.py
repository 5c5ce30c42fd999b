"""Workers and queues, as the Workers page shows them.

Workers come from ``Client.workers``: RQ's registry (name, state, queues, the run in hand, host,
pid) and what each worker publishes about itself (``envflow:worker:<name>``): its warm
processes, each with its env, preloads, how runs start there and its memory. The envs a worker
serves are those of its warm processes, plus any it lists itself under ``envs``. This is the
one place that turns what workers publish into what the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..client import Client


@dataclass
class WarmProcess:
    env: str
    preload: list[str]
    mode: str  # "fork" (runs fork from a ready process), "spare" (a process started ahead), "starting"
    rss_mib: float
    idle: float | None


@dataclass
class WorkerInfo:
    name: str
    state: str
    queues: list[str]
    current_run: str | None
    hostname: str | None
    pid: int | None
    envs: list[str] = field(default_factory=list)
    warm: list[WarmProcess] = field(default_factory=list)


def _warm(item: dict[str, Any]) -> WarmProcess:
    return WarmProcess(str(item.get("env", "?")), [str(p) for p in item.get("preload") or []],
                       str(item.get("mode", "?")), float(item.get("rss") or 0) / 2**20,
                       item.get("idle") if isinstance(item.get("idle"), (int, float)) else None)


def workers(client: Client) -> list[WorkerInfo]:
    """Every live worker, by name."""
    found = []
    for w in client.workers():
        warm = [_warm(p) for p in w.get("warm") or [] if isinstance(p, dict)]
        envs = sorted({*(str(e) for e in w.get("envs") or []), *(p.env for p in warm)})
        found.append(WorkerInfo(name=w["name"], state=w["state"], queues=list(w["queues"]), current_run=w.get("run"),
                                hostname=w.get("host"), pid=w.get("pid"), envs=envs, warm=warm))
    return found


def queues(client: Client) -> list[dict[str, Any]]:
    """Every queue: queued, running and scheduled counts, its workers, paused or not (``Client.queues``)."""
    return client.queues()
