"""What a worker tells the others about itself, refreshed by its maintenance thread.

It publishes ``envflow:worker:<name>`` (JSON, expiring unless refreshed): its warm processes,
their envs, preloads and memory (``envflow worker status`` reads it). It also keeps warm the envs
of the ``warm=True`` deployments on its queues, from its start, and lets idle ones go.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from redis import Redis

from envflow import keys
from envflow.models import DeploymentRecord
from envflow.settings import Settings

from .env_cache import EnvCache
from .environments import flow_base
from .executor import warm_key
from .warm import WarmPool

log = logging.getLogger("envflow.worker")

WARM_SCAN = 10.0  # seconds between looks for warm=True deployments


class Presence:
    def __init__(self, name: str, queues: list[str], redis: Redis, settings: Settings, pool: WarmPool) -> None:
        self.name = name
        self.queues = set(queues)
        self.redis = redis
        self.settings = settings
        self.pool = pool
        self.env_cache = EnvCache(settings)  # its own: the run's thread uses the executor's
        self.base = flow_base(os.environ, settings)
        self.ttl = max(int(settings.reaper_interval * 3), int(settings.lease_ttl), 1)
        self._scanned_at = 0.0
        self._failed: set[str] = set()  # deployments whose env this worker could not prepare (said once)

    def refresh(self) -> None:
        self.pool.tick()
        if time.monotonic() - self._scanned_at >= WARM_SCAN:
            self._scanned_at = time.monotonic()
            self._keep_warm()
        self.redis.set(keys.worker(self.name), json.dumps(self.describe()), ex=self.ttl)

    def describe(self) -> dict[str, Any]:
        return {"warm": self.pool.status(), "at": round(time.time(), 3)}

    def remove(self) -> None:
        self.redis.delete(keys.worker(self.name))

    def _keep_warm(self) -> None:
        names = [n.decode() for n in self.redis.zrange(keys.DEPLOYMENTS, 0, -1)]
        raws = self.redis.mget([keys.deployment(n) for n in names]) if names else []
        for raw in raws:
            record = DeploymentRecord.model_validate_json(raw) if raw else None
            if record is None or not record.warm or record.queue not in self.queues:
                continue
            try:
                prepared = self.env_cache.prepare(record.env, self.base, record.env_vars)
            except Exception as e:  # noqa: BLE001 - an env this worker cannot prepare stays cold
                if record.name not in self._failed:
                    log.warning("cannot keep %s warm here: %s", record.name, e)
                    self._failed.add(record.name)
                continue
            self._failed.discard(record.name)
            preload = tuple(record.preload)
            self.pool.keep_warm(prepared.python, prepared.variables, warm_key(prepared, preload), preload,
                                str(record.env))
