"""What a worker tells the others about itself, refreshed by its maintenance thread.

It resolves, on this machine, the envs deployments name (``envflow:envs``) and advertises those it
has: in ``envflow:route:<queue>:<key>`` (the runs of those envs come to it, ``envflow/store/routing.py``)
and in ``envflow:worker:<name>`` (JSON, expiring unless refreshed), with its warm processes, their
envs, preloads and memory (``envflow worker status``). It keeps the envs of the ``warm=True``
deployments on its queues warm from its start, and lets idle ones go.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

from envflow.models import EnvKind, EnvSpec
from envflow.settings import Settings
from envflow.store import keys, routing
from envflow.store.deployments import DeploymentStore
from envflow.store.protocol import RunScripts

from .env_cache import EnvCache, Fingerprint, fingerprint
from .environments import flow_base, kind_for
from .launcher import split_own
from .warm import WarmPool, warm_key

log = logging.getLogger("envflow.worker")

WARM_SCAN = 10.0  # seconds between looks for warm=True deployments
RECHECK = 10.0  # seconds between full resolutions of an env, found or not (stat calls in between)


@dataclass
class _Seen:
    """An env as last resolved in full, with the stamps of the paths that answer rested on."""

    info: dict[str, str] | None  # what the worker advertises of it (path, Python version, route); None: it lacks it
    error: str  # why it lacks it
    paths: list[str]
    stamp: Fingerprint
    at: float  # monotonic time of the full resolution
    route: str | None = None  # the env's route key (routing.route_key)


class Presence:
    def __init__(self, name: str, queues: list[str], redis: Redis, settings: Settings, pool: WarmPool) -> None:
        self.name = name
        self.queues = list(queues)
        self.redis = redis
        self.settings = settings
        self.pool = pool
        self.scripts = RunScripts(redis, settings)
        self.env_cache = EnvCache(settings, redis=redis)  # its own: the run's thread uses the executor's
        self.base = flow_base(os.environ, settings)
        self.ttl = max(settings.reaper_interval * 3, settings.lease_ttl, 1.0)
        self.routes: frozenset[str] = frozenset()  # the envs this worker takes runs of (read by its main thread)
        self.envs: dict[str, dict[str, str]] = {}  # by name (routing.env_name): each built env its own row
        self.missing: dict[str, str] = {}  # envs deployments name that this worker cannot run, and why (by
        # route key, which routing.waiting_for reads, and by name)
        self.missing_routes: set[str] = set()
        self._published_at = 0.0
        self._scanned_at = 0.0
        self._failed: set[str] = set()  # deployments whose env this worker could not prepare (said once)
        self._seen: dict[bytes, _Seen] = {}  # the envs it has, by their spec as deployments store it

    def refresh(self) -> None:
        """Look at the envs again; publish at once when they changed, else every reaper interval."""
        missing = set(self.missing)
        envs = self._resolve()
        routes = frozenset(info["route"] for info in envs.values())
        changed = routes != self.routes or set(envs) != set(self.envs)
        gone = set(self.routes) - routes
        self.envs, self.routes = envs, routes
        now = time.monotonic()
        if changed or missing != set(self.missing) or now - self._published_at >= self.settings.reaper_interval:
            self._published_at = now
            self.pool.tick()
            if now - self._scanned_at >= WARM_SCAN:
                self._scanned_at = now
                self._keep_warm()
            self._publish(gone)
            self._say_why_waiting()
        if changed:  # the worker's dequeue waits on its old set of queues: have it listen on the new one now
            wake = routing.wake_key(self.name)
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(wake, 1)
                pipe.ltrim(wake, 0, 0)
                pipe.expire(wake, int(self.ttl) + 1)
                pipe.execute()

    def lost(self, key: str) -> None:
        """An env this worker advertised turned out gone (a run found it so): stop taking its runs now, and
        look again at the next refresh (which then says why it lacks it)."""
        self.routes = self.routes - {key}
        self._seen = {}  # every env is resolved in full again at the next refresh

    def _resolve(self) -> dict[str, dict[str, str]]:
        found, missing, seen, missing_routes = {}, {}, {}, set()
        now = time.monotonic()
        for raw_key, raw_spec in self.redis.hgetall(keys.ENVS).items():
            known = self._seen.get(raw_spec)
            if known is None or now - known.at > RECHECK or fingerprint(known.paths) != known.stamp:
                known = self._check(raw_spec, now)
            if known.paths:
                seen[raw_spec] = known
            if known.info is None:  # an env this worker does not have is not advertised; why is
                missing[raw_key.decode()] = known.error
                if known.route:
                    missing[known.route] = known.error
                    missing_routes.add(known.route)
            else:
                found[raw_key.decode()] = known.info
        self.missing, self._seen, self.missing_routes = missing, seen, missing_routes
        return found

    def _check(self, raw_spec: bytes, now: float) -> _Seen:
        """Resolve an env in full, stamping what the answer rests on: until a stamp changes (or RECHECK
        passes), the next looks cost a few stat calls."""
        given: list[str] = []
        route = None
        try:
            spec = EnvSpec.model_validate_json(raw_spec)
            route = routing.route_key(spec)
            if spec.kind in (EnvKind.VENV, EnvKind.CONDA_PREFIX) and spec.value:  # created, or a link re-pointed
                given = [str(self.env_cache.resolver.cwd / os.path.expanduser(spec.value))]
            env = kind_for(spec).available(spec, self.env_cache.resolver)
            version = env.python_version()
        except Exception as e:  # noqa: BLE001 - whatever the reason, it is said, not raised
            return _Seen(None, str(e), given, fingerprint(given), now, route)  # named envs: looked up each time
        paths = [str(env.prefix), str(env.python), *given]
        info = {"path": str(env.prefix), "python": ".".join(map(str, version)) if version else "?",
                "route": route or ""}
        return _Seen(info, "", paths, fingerprint(paths), now, route)

    def _publish(self, gone: set[str]) -> None:
        lapse = time.time() + self.ttl
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                for key in self.routes:
                    index = keys.route(queue, key)
                    pipe.zadd(index, {self.name: lapse})
                    pipe.zremrangebyscore(index, "-inf", time.time())  # dead workers' lapsed entries
                    pipe.expire(index, int(self.ttl * 4) + 1)
                for key in gone:
                    pipe.zrem(keys.route(queue, key), self.name)
            pipe.set(keys.worker(self.name), json.dumps(self.describe()), ex=int(self.ttl) + 1)
            pipe.execute()

    def _say_why_waiting(self) -> None:
        """Tell the runs of the envs this worker lacks why they wait, once every live worker has looked.
        Only the sub-queues that hold runs are looked at further (one round trip finds them): what the
        other workers publish is read for an env with runs waiting, not for every env this one lacks."""
        pairs = [(queue, key) for queue in self.queues for key in sorted(self.missing_routes)]
        if not pairs:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for queue, key in pairs:
                pipe.llen(keys.RQ_QUEUE_PREFIX + routing.rq_queue(queue, key))
            sizes = pipe.execute()
        for (queue, key), size in zip(pairs, sizes):
            if not size:
                continue
            try:
                routing.note_route(self.redis, self.scripts, queue, key)
            except Exception as e:  # noqa: BLE001 - a note is best effort; the reaper says it too
                log.debug("cannot note why runs of %s wait: %s", key, e)

    def describe(self) -> dict[str, Any]:
        sandbox = self.pool.sandbox
        return {"envs": self.envs, "missing": self.missing, "warm": self.pool.status(), "at": round(time.time(), 3),
                "sandbox": {"on": sandbox.on, "note": sandbox.note} if sandbox is not None else None}

    def remove(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                for key in self.routes:
                    pipe.zrem(keys.route(queue, key), self.name)
            pipe.delete(keys.worker(self.name), routing.wake_key(self.name))
            pipe.execute()

    def _keep_warm(self) -> None:
        for record in DeploymentStore(self.redis).all():
            if not record.warm or record.queue not in self.queues:
                continue
            try:
                prepared = self.env_cache.prepare(record.env, self.base, record.env_vars)
                variables, own = split_own(prepared.variables, record.env_vars)
            except Exception as e:  # noqa: BLE001 - an env this worker cannot prepare stays cold
                if record.name not in self._failed:
                    log.warning("cannot keep %s warm here: %s", record.name, e)
                    self._failed.add(record.name)
                continue
            self._failed.discard(record.name)
            preload = tuple(record.preload)
            self.pool.keep_warm(prepared.python, variables, warm_key(prepared, preload), preload, str(record.env), own)
