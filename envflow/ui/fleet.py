"""Workers and queues, as the Workers page shows them.

Workers come from RQ's worker registry: name, state, queues, the run in hand (envflow's job id
is the run id), host, pid, heartbeat. ``envs`` and ``warm`` are left empty until workers
advertise the environments they serve and their warm processes; that is the one place to
fill them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..client import Client
from ..jobs import SERIALIZER


@dataclass
class WorkerInfo:
    name: str
    state: str
    queues: list[str]
    current_run: str | None
    hostname: str | None
    pid: int | None
    last_heartbeat: float | None
    started: float | None
    successful: int
    failed: int
    envs: list[str] = field(default_factory=list)
    warm: list[str] = field(default_factory=list)


def workers(client: Client) -> list[WorkerInfo]:
    """Every live worker RQ knows, by name."""
    from rq.worker import Worker

    found = []
    for w in Worker.all(connection=client.redis, serializer=SERIALIZER):
        found.append(WorkerInfo(
            name=w.name,
            state=w.get_state(),
            queues=w.queue_names(),
            current_run=w.get_current_job_id(),
            hostname=w.hostname,
            pid=w.pid,
            last_heartbeat=w.last_heartbeat.timestamp() if w.last_heartbeat else None,
            started=w.birth_date.timestamp() if w.birth_date else None,
            successful=w.successful_job_count,
            failed=w.failed_job_count,
        ))
    return sorted(found, key=lambda w: w.name)


def queues(client: Client) -> list[dict[str, Any]]:
    """Every queue: queued, running and scheduled counts, its workers, paused or not (``Client.queues``)."""
    return client.queues()
