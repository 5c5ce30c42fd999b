"""Env-affinity routing: a run is taken only by a live worker that has its environment.

A run whose deployment names an environment goes to a sub-queue of its queue, one per env:
``<queue>@<digest of the env's route key>`` (``route_key``: ``venv:./venvs/x``, ``conda:gpu``, ...,
the env as the deployment names it; ``build:<python>`` for envs built from requirements, which any
worker able to build from that interpreter can run). Each worker resolves, on its own machine, the envs that
deployments name (``envflow:envs``), and listens on the sub-queues of those it has, besides the
queue itself (runs without an env). It advertises them in ``envflow:route:<queue>:<key>``, a set of
worker names scored by when the advertisement lapses: a dead worker's lapses with its lease. A run
with no live worker advertising its env waits, PENDING, and says why (``waits.py``); RQ does the rest (a retry goes
back to the sub-queue, so to a capable worker).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from .. import waits
from ..waits import Waiting
from . import keys

if TYPE_CHECKING:  # listings read the routing indexes without loading the models (pydantic)
    from redis import Redis

    from ..models import EnvSpec
    from .protocol import RunScripts

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


def env_name(spec: EnvSpec) -> str | None:
    """The env as people see it (``envflow:envs``' field, a worker's ``envs``): its route key, except that
    an env built from requirements is named by them, a short digest plus the first packages, as routing's
    ``build:<python>`` stands for every such env on one interpreter."""
    from ..models import EnvKind

    route = route_key(spec)
    if spec.kind is not EnvKind.REQUIREMENTS or route is None:
        return route
    what = json.dumps([spec.python or "", list(spec.requirements), spec.requirements_digest or ""])
    digest = hashlib.sha256(what.encode()).hexdigest()[:8]
    first = list(spec.requirements[:2]) + (["-r file"] if spec.requirements_digest else [])
    more = len(spec.requirements) - 2
    return f"{route} {digest} ({', '.join(first)}{f', +{more}' if more > 0 else ''})"


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


def live_workers(redis: Redis, queue: str) -> list[tuple[str, dict[str, Any]]]:
    """The live workers of ``queue`` (those whose published presence has not lapsed), with what each publishes."""
    names = sorted(k.decode().removeprefix(keys.RQ_WORKER_PREFIX) for k in redis.smembers(keys.rq_workers(queue)))
    return [(name, info) for name, info in zip(names, published(redis, names)) if info]


def no_worker(queue: str, key: str | None = None) -> Waiting:
    """The wait of a run whose queue no live worker serves."""
    return Waiting(waits.NO_WORKER, f"waiting: no live worker on queue {queue}", {"queue": queue, "env": key})


def waiting_for(redis: Redis, queue: str, key: str | None) -> Waiting | None:
    """Why a run of ``queue`` for the env ``key`` waits, as far as the workers say; None while it need not
    (a live worker has the env) or while they have not all looked for it yet (a deployment just created:
    they do within a second). Kind ``env``: every live worker of the queue looked and lacks it (the reaper
    FAILs such a run after ``ENVFLOW_ENV_WAIT``); details hold each one's error."""
    workers = live_workers(redis, queue)
    if not workers:
        return no_worker(queue, key)
    if key is None or capable(redis, queue, key):
        return None
    if not all(key in info.get("missing", {}) for _, info in workers):
        return None
    errors = {name: str(info["missing"][key]) for name, info in workers}
    have = sorted({env for _, info in workers for env in info.get("envs", {})})
    first = next(iter(errors.values()))
    others = len(set(errors.values())) - 1
    more = f" (and {others} other reason{'s' if others > 1 else ''}: `envflow worker status`)" if others else ""
    count = f"the live worker on queue {queue} lacks" if len(workers) == 1 else \
        f"all {len(workers)} live workers on queue {queue} lack"
    shown = ", ".join(have[:10]) + (", ..." if len(have) > 10 else "") if have else "no envs"
    message = f"waiting for a worker with {key}: {count} it: {first}{more}; they have: {shown}"
    return Waiting(waits.ENV, message, {"queue": queue, "env": key, "errors": errors, "have": have[:20]})


def queued(redis: Redis, queue: str, key: str | None) -> Waiting | None:
    """A just-submitted run's place, when it does not start at once: the runs ahead of it in its queue and
    the workers that can take it, busy or not. None when one of them is idle and nothing is ahead."""
    if key is None:
        names = [name for name, _ in live_workers(redis, queue)]
    else:
        names = sorted(m.decode() for m in redis.zrangebyscore(keys.route(queue, key), time.time(), "+inf"))
    if not names:
        return None
    ahead = max(int(redis.llen(keys.RQ_QUEUE_PREFIX + rq_queue(queue, key))) - 1, 0)
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(keys.RQ_WORKER_PREFIX + name, "state")
        busy = sum(1 for state in pipe.execute() if state == b"busy")
    if not ahead and busy < len(names):
        return None
    workers = f"{len(names)} worker{'s' if len(names) > 1 else ''}"
    busy_text = "busy" if len(names) == 1 else f"{busy} busy"
    message = f"queued: {ahead} run{'' if ahead == 1 else 's'} ahead on queue {queue}, {workers}, {busy_text}"
    return Waiting(waits.QUEUED, message, {"queue": queue, "env": key, "ahead": ahead, "workers": len(names),
                                           "busy": busy})


def waiting_reason(redis: Redis, queue: str, key: str) -> str | None:
    """:func:`waiting_for`'s message."""
    waiting = waiting_for(redis, queue, key)
    return waiting.message if waiting else None


def note_route(redis: Redis, scripts: RunScripts, queue: str, key: str, limit: int = 1000) -> Waiting | None:
    """Say, on the runs waiting in the sub-queue of ``queue`` for ``key``, why they wait (when they do)."""
    waiting = waiting_for(redis, queue, key)
    if waiting is not None:
        ids = [raw.decode() for raw in redis.lrange(keys.RQ_QUEUE_PREFIX + rq_queue(queue, key), 0, limit - 1)]
        if ids:
            scripts.note_waiting(ids, waiting).run()
    return waiting


def published(redis: Redis, names: list[str]) -> list[dict[str, Any]]:
    """What each worker publishes of itself (``worker/presence.py``: envs, missing, warm), in the order
    of ``names``; ``{}`` for one that has not (yet, or any more)."""
    raws = redis.mget([keys.worker(n) for n in names]) if names else []
    return [json.loads(raw) if raw else {} for raw in raws]
