"""Env-affinity routing: a run is taken only by a live worker that has its environment.

A run whose deployment names an environment goes to a sub-queue of its queue, one per env:
``<queue>@<digest of the env's route key>`` (``route_key``: ``venv:./venvs/x``, ``conda:gpu``, ...,
the env as the deployment names it; ``build:<python>`` for envs built from requirements, which any
worker able to build from that interpreter can run). Each worker resolves, on its own machine, the envs that
deployments name (``envflow:envs``), and listens on the sub-queues of those it has, besides the
queue itself (runs without an env). It advertises them in ``envflow:route:<queue>:<key>``, a set of
worker names scored by when the advertisement lapses: a dead worker's lapses with its lease. A run
with no live worker advertising its env waits, PENDING, and says why; RQ does the rest (a retry goes
back to the sub-queue, so to a capable worker).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from . import keys

if TYPE_CHECKING:  # listings read the routing indexes without loading the models (pydantic)
    from redis import Redis

    from ..models import EnvSpec

SUBQUEUE = "@"


def route_key(spec: EnvSpec) -> str | None:
    """The env as routing knows it (None: the worker's own, which every worker has)."""
    from ..models import EnvKind
    if spec.kind is EnvKind.REQUIREMENTS:  # any worker that can build it from that base interpreter
        return f"build:{spec.python or ''}"
    if spec.kind is EnvKind.WORKER or not spec.value:
        return None
    if spec.kind is EnvKind.CONDA:
        return f"conda:{spec.value}"
    value = spec.value
    prefix = "./" if not value.startswith(("/", "~")) else ""
    kind = "venv" if spec.kind is EnvKind.VENV else "conda"
    return f"{kind}:{prefix}{os.path.normpath(value)}"


def rq_queue(queue: str, key: str | None) -> str:
    """The RQ queue a run of ``queue`` for the env ``key`` waits in."""
    if key is None:
        return queue
    return f"{queue}{SUBQUEUE}{hashlib.sha256(key.encode()).hexdigest()[:12]}"


WAKE = "envflow-wake:"  # RQ queue name prefix of each worker's wake-up list (never holds a job)


def wake_queue(worker: str) -> str:
    """The RQ queue a worker also waits on, so that a change of its envs ends its wait at once."""
    return WAKE + worker


def wake_key(worker: str) -> str:
    return keys.RQ_QUEUE_PREFIX + wake_queue(worker)  # RQ's Queue.key of that name


def user_queue(rq_name: str) -> str:
    """The queue users name, of an RQ queue (a sub-queue's is its prefix)."""
    return rq_name.partition(SUBQUEUE)[0]


def capable(redis: Redis, queue: str, key: str) -> int:
    """How many live workers of ``queue`` advertise the env ``key``."""
    return int(redis.zcount(keys.route(queue, key), time.time(), "+inf"))


def waiting_reason(redis: Redis, queue: str, key: str) -> str | None:
    """Why a run for ``key`` waits: what the live workers of ``queue`` have instead, and why they lack it.
    None while none of them has looked for the env yet (a deployment just created: they do within a second)."""
    names = sorted(k.decode().removeprefix(keys.RQ_WORKER_PREFIX) for k in redis.smembers(keys.rq_workers(queue)))
    infos = [info for info in published(redis, names) if info]
    if not infos:
        return f"waiting for a worker with {key}; no worker serves queue {queue}"
    if not any(key in info.get("envs", {}) or key in info.get("missing", {}) for info in infos):
        return None
    have = sorted({env for info in infos for env in info.get("envs", {})})
    shown = ", ".join(have[:10]) + (", ..." if len(have) > 10 else "") if have else "no envs"
    why = next((info["missing"][key] for info in infos if key in info.get("missing", {})), None)
    return f"waiting for a worker with {key}; workers on queue {queue} have: {shown}" + (f"; {why}" if why else "")


def published(redis: Redis, names: list[str]) -> list[dict[str, Any]]:
    """What each worker publishes of itself (``worker/presence.py``: envs, missing, warm), in the order
    of ``names``; ``{}`` for one that has not (yet, or any more)."""
    raws = redis.mget([keys.worker(n) for n in names]) if names else []
    return [json.loads(raw) if raw else {} for raw in raws]
