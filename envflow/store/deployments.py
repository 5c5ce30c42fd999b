"""Deployment records in Redis, read and written in one place.

A deployment is ``envflow:deployment:<flow>/<name>`` (its record as JSON) and a member of
``envflow:deployments`` (scored by creation time); its flow file's source and requirements file are
stored content-addressed beside it, a deployment that names an env registers it in ``envflow:envs``
(so workers look for it), and a paused one is in ``envflow:paused``. Every reader goes through
:meth:`DeploymentStore.all` or :meth:`DeploymentStore.raw`, so one unreadable record (written by
another version, say) is skipped with a warning everywhere alike.

Importing this module costs no more than redis-py: the records' model is imported where one is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from redis import Redis
from redis.client import Pipeline

from . import keys, routing

if TYPE_CHECKING:
    from ..models import DeploymentRecord


def answering(pipe: Pipeline) -> Redis:
    """A pipeline between WATCH and MULTI runs each command at once and returns its reply, as a client
    does (redis-py's types know it only as a pipeline): for the transactions that WATCH a deployment."""
    return cast(Redis, pipe)


class DeploymentStore:
    """The deployments of one Redis.

    :param redis: a Redis client.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    # Reading

    def names(self) -> list[str]:
        """Every registered deployment's name, oldest first."""
        return [n.decode() for n in self.redis.zrange(keys.DEPLOYMENTS, 0, -1)]

    def raw(self, name: str) -> bytes | None:
        """A deployment's stored JSON, unchecked (None: no such deployment)."""
        found = self.redis.get(keys.deployment(name))
        return None if found is None else bytes(found)

    def fetch(self, names: list[str], pipeline: Pipeline) -> None:
        """Queue the read of these deployments' JSON (one ``MGET``) in ``pipeline``."""
        pipeline.mget([keys.deployment(n) for n in names])

    def all(self) -> list[DeploymentRecord]:
        """Every readable deployment, by name; unreadable ones are skipped with a warning."""
        from ..models import readable_deployments

        names = self.names()
        raws = self.redis.mget([keys.deployment(n) for n in names]) if names else []
        return sorted(readable_deployments(zip(names, raws)), key=lambda d: d.name)

    def exists(self, name: str) -> bool:
        return bool(self.redis.exists(keys.deployment(name)))

    def paused(self) -> set[str]:
        return {n.decode() for n in self.redis.smembers(keys.PAUSED_DEPLOYMENTS)}

    # Writing

    def save(self, record: DeploymentRecord, payload: str, source: str | None, requirements: str | None) -> None:
        """Store a deployment (its JSON ``payload``), with its flow source and requirements file when
        given, and register its env, in one transaction."""
        with self.redis.pipeline(transaction=True) as pipe:
            if record.source_digest and source is not None:
                pipe.set(keys.source(record.source_digest), source)  # no expiry: in use again
            if record.env.requirements_digest and requirements is not None:
                pipe.set(keys.requirements(record.env.requirements_digest), requirements)
            pipe.set(keys.deployment(record.name), payload)
            pipe.zadd(keys.DEPLOYMENTS, {record.name: record.created_at})
            route = routing.route_key(record.env)
            if route is not None:  # workers that have this env start listening for its runs
                pipe.hset(keys.ENVS, routing.env_name(record.env) or route, record.env.model_dump_json())
            pipe.execute()

    def delete(self, name: str) -> None:
        """Remove a deployment, its schedules' cursors and skipped slots."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.deployment(name))
            pipe.zrem(keys.DEPLOYMENTS, name)
            pipe.delete(keys.schedule_state(name), keys.skipped_slots(name))
            pipe.execute()

    def pause(self, name: str) -> None:
        self.redis.sadd(keys.PAUSED_DEPLOYMENTS, name)

    def resume(self, name: str) -> None:
        self.redis.srem(keys.PAUSED_DEPLOYMENTS, name)

    def retire(self, stale: list[tuple[str, str]], ttl: int) -> None:
        """Let stored files (``(digest, kind)``, kind ``source`` or ``requirements``) that no deployment
        uses any more expire after ``ttl`` seconds, once runs that may still need them are gone."""
        in_use = {d for r in self.all() for d in (r.source_digest, r.env.requirements_digest) if d}
        for digest, kind in stale:
            if digest not in in_use:
                self.redis.expire(keys.source(digest) if kind == "source" else keys.requirements(digest), ttl)
