"""Filling a Redis database with many finished runs, by pipeline, without workers.

A few template runs go through the real run protocol (``RunStore.create``, then the claim, append
and finish scripts, as a worker drives them); every filled run copies a template's record with its
own id and creation time. Transition and attempt times are stored relative to the creation time
(``envflow/store/run_hash.py``), so a copy is a well-formed record of a run created then, and it is
indexed as ``RunStore.create`` and the scripts index it (``envflow/store/indexes.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from envflow.client import Client
from envflow.models import Attempt, DeploymentRecord, RunState
from envflow.output.writer import OutputWriter
from envflow.settings import Settings
from envflow.store import indexes, keys
from envflow.store.protocol import Claimed, Ending

BATCH = 2000
SPREAD = 20 * 24 * 3600  # filled runs were created over the last 20 days (within the run ttl)


@dataclass(frozen=True)
class Mix:
    """Which deployment and state run ``i`` of a fill gets: every ``every``-th run is the small
    deployment's; two in ``2 * every`` failed (one of each deployment)."""

    big: str
    small: str
    every: int

    def pick(self, i: int) -> tuple[str, RunState]:
        deployment = self.small if i % self.every == 0 else self.big
        failed = i % (2 * self.every) in (0, 1)
        return deployment, RunState.FAILED if failed else RunState.COMPLETED


def deployment_record(name: str) -> DeploymentRecord:
    flow, _, deployment = name.partition("/")
    return DeploymentRecord(name=name, deployment=deployment, flow_name=flow, flow_path="/bench/flows.py",
                            flow_storage="path", queue="bench-scale", created_at=1.0, updated_at=1.0)


def _template(client: Client, deployment: DeploymentRecord, state: RunState) -> tuple[str, dict[bytes, bytes]]:
    """A run of ``deployment`` driven to ``state`` through the scripts; its id and record."""
    store = client.store
    run_id = store.create(deployment, {})
    claimed = store.scripts.claim(run_id, "bench-worker", deployment.queue).run()
    assert isinstance(claimed, Claimed), claimed
    writer = OutputWriter(store.scripts, run_id, claimed.attempt)
    writer.feed("o", b"hello world\n")
    writer.flush(force=True)
    attempt = Attempt(n=claimed.attempt, worker="bench-worker", started_at=claimed.started_at,
                      ended_at=round(time.time(), 6), state=state.value,
                      exit_code=0 if state is RunState.COMPLETED else 1)
    assert store.scripts.finish(run_id, Ending(attempt, state, result="null")).run()
    return run_id, client.redis.hgetall(keys.run(run_id))


def fill(settings: Settings, n: int, mix: Mix, progress: Callable[[int], None] | None = None) -> list[str]:
    """Add ``n`` finished runs to the database of ``settings.redis_url`` (and 4 template runs); all their ids."""
    client = Client(settings=settings)
    for name in (mix.big, mix.small):
        client.create_deployment(deployment_record(name))
    templates = {(d, s): _template(client, deployment_record(d), s)
                 for d in (mix.big, mix.small) for s in (RunState.COMPLETED, RunState.FAILED)}
    r: redis.Redis = client.redis
    now = time.time()
    ids: list[str] = [template_id for template_id, _ in templates.values()]
    for start in range(0, n, BATCH):
        with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + BATCH, n)):
                deployment, state = mix.pick(i)
                run_id = uuid.uuid4().hex
                created = round(now - SPREAD + SPREAD * i / n, 6)
                pipe.hset(keys.run(run_id), mapping=_copy(templates[(deployment, state)][1], created))
                pipe.expire(keys.run(run_id), settings.run_ttl)
                indexes.add(pipe, run_id, deployment, state, created)
                ids.append(run_id)
            pipe.execute()
        if progress is not None:
            progress(min(start + BATCH, n))
    client.redis.close()
    return ids


def _copy(template: dict[bytes, bytes], created: float) -> dict[bytes, bytes]:
    fields = dict(template)
    old = float(fields[b"created_at"])
    fields[b"created_at"] = repr(created).encode()
    if b"attempt_started_at" in fields:
        fields[b"attempt_started_at"] = repr(round(created + float(fields[b"attempt_started_at"]) - old, 6)).encode()
    return fields
