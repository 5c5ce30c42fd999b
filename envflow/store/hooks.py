"""Hooks in Redis: the site-wide hooks, the outbox the transition scripts write (``lua/_hooks.lua``), and the
deliveries each event becomes. Delivering them (HTTP, run hooks, retries) is ``envflow/hooks/``'s.

An outbox event is read through the consumer group ``deliverers``, so each goes to one deliverer; it stays
pending there until its deliveries are recorded, so a deliverer that dies first hands it on (XAUTOCLAIM,
after ``ENVFLOW_WEBHOOK_CLAIM_IDLE``). Each delivery (event x matching hook) is a hash; its entry in
``envflow:hooks:due`` says when to try it next, and a deliverer trying it pushes that a lease ahead first
(``lua/hook_claim.lua``; its creator holds it from the start), so one that dies mid-try hands it on too. A
receiver may thus see one delivery id twice: hooks are delivered at least once.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from ..errors import ConfigError
from ..hook_spec import Hook
from . import keys

# A delivery id: the event's stream id, then the hook: d<index> (the deployment's) or s<id> (site-wide).
DELIVERY_ID = re.compile(r"^\d+-\d+\.(d\d+|s[0-9a-f]+)$")
EVENT_ID = re.compile(r"^\d+-\d+$")
DEAD_KEPT = 10_000  # delivery ids the dead-letter list keeps
LISTED_KEPT = 50_000  # delivery ids the listing index keeps (their hashes expire on their own)


@dataclass(frozen=True)
class OutboxEvent:
    """One event of the outbox: a run reached ``event`` (a final state, or LATE) at ``at``."""

    id: str
    run_id: str
    event: str
    at: float


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _script(redis: Redis, name: str) -> Any:
    return redis.register_script(files("envflow.store").joinpath("lua").joinpath(f"{name}.lua").read_text())


class SiteHooks:
    """The hooks every deployment's runs fire (``envflow hook add``), by id."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def add(self, hook: Hook) -> str:
        hook_id = secrets.token_hex(4)
        self.redis.hset(keys.SITE_HOOKS, hook_id, hook.model_dump_json(exclude_defaults=True))
        return hook_id

    def all(self) -> dict[str, Hook]:
        return {_text(k): Hook.model_validate_json(v) for k, v in sorted(self.redis.hgetall(keys.SITE_HOOKS).items())}

    def remove(self, hook_id: str) -> bool:
        return bool(self.redis.hdel(keys.SITE_HOOKS, hook_id))


class HookStore:
    """The outbox and the deliveries, for the deliverers and the ``envflow hook`` commands.

    :param lease: seconds a claimed delivery (or event) is a deliverer's before another may take it.
    :param ttl: seconds a delivery's record is kept after it was created.
    """

    def __init__(self, redis: Redis, lease: float, ttl: int) -> None:
        self.redis = redis
        self.lease = lease
        self.ttl = ttl
        self.site = SiteHooks(redis)
        self._claim = _script(redis, "hook_claim")
        self._create = _script(redis, "hook_create")
        self._group_made = False

    # The outbox

    def _ensure_group(self) -> None:
        if self._group_made:
            return
        try:
            self.redis.xgroup_create(keys.HOOK_OUTBOX, keys.HOOK_GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_made = True

    def read_events(self, consumer: str, count: int, block_ms: int) -> list[OutboxEvent]:
        """Events for ``consumer``: first those another deliverer left pending longer than the lease, then new
        ones (waiting up to ``block_ms`` for one)."""
        self._ensure_group()
        try:
            claimed = self.redis.xautoclaim(keys.HOOK_OUTBOX, keys.HOOK_GROUP, consumer,
                                            int(self.lease * 1000), "0-0", count=count)
            entries = list(claimed[1])
            if not entries:
                got = self.redis.xreadgroup(keys.HOOK_GROUP, consumer, {keys.HOOK_OUTBOX: ">"}, count=count,
                                            block=max(block_ms, 1))
                entries = [e for _, stream in got or [] for e in stream]
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._group_made = False  # the outbox was deleted (FLUSHDB): make the group again next pass
            return []
        events = []
        for entry_id, fields in entries:
            if not fields:
                continue  # trimmed away meanwhile
            f = {_text(k): _text(v) for k, v in fields.items()}
            events.append(OutboxEvent(_text(entry_id), f.get("run", ""), f.get("state", ""), float(f.get("at", 0))))
        return events

    def ack(self, event_id: str) -> None:
        """The event's deliveries are recorded: drop it from the outbox."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.HOOK_OUTBOX, keys.HOOK_GROUP, event_id)
            pipe.xdel(keys.HOOK_OUTBOX, event_id)
            pipe.execute()

    # Deliveries

    def create(self, delivery_id: str, fields: dict[str, str], now: float | None = None) -> bool:
        """Record a delivery (``fields`` name its ``run``), held by its creator for one lease; False when it
        existed already."""
        args = [delivery_id, repr(now or time.time()), self.lease, self.ttl, LISTED_KEPT,
                *[item for pair in fields.items() for item in pair]]
        run_keys = [keys.hook_delivery(delivery_id), keys.HOOKS_DUE, keys.HOOK_DELIVERIES, keys.run_hooks(fields["run"])]
        return bool(self._create(keys=run_keys, args=args))

    def claim_due(self, count: int, now: float | None = None) -> list[str]:
        """Up to ``count`` deliveries due now, each held by the caller for one lease."""
        raw = self._claim(keys=[keys.HOOKS_DUE], args=[repr(now or time.time()), self.lease, count])
        return [_text(r) for r in raw]

    def next_due(self) -> float | None:
        """When the next delivery is due, or None."""
        first = self.redis.zrange(keys.HOOKS_DUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def get(self, delivery_id: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(keys.hook_delivery(delivery_id))
        return {_text(k): _text(v) for k, v in raw.items()} or None

    def record_try(self, delivery_id: str, code: str, error: str, status: str, next_at: float | None) -> None:
        """One try's outcome: ``status`` pending (tried again at ``next_at``), delivered, gone (410) or failed
        (retries exhausted: the dead-letter list)."""
        key = keys.hook_delivery(delivery_id)
        now = time.time()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "tries", 1)
            pipe.hset(key, mapping={"status": status, "last_code": code, "last_error": error, "last_try": repr(now)})
            pipe.hsetnx(key, "first_try", repr(now))
            pipe.eval("local c = redis.call('HGET', KEYS[1], 'codes') "
                      "redis.call('HSET', KEYS[1], 'codes', c and (c .. ',' .. ARGV[1]) or ARGV[1])", 1, key, code)
            if status == "pending" and next_at is not None:
                pipe.hset(key, "next_at", repr(next_at))
                pipe.zadd(keys.HOOKS_DUE, {delivery_id: next_at})
            else:
                pipe.hdel(key, "next_at")
                pipe.zrem(keys.HOOKS_DUE, delivery_id)
            if status == "delivered":
                pipe.hset(key, "delivered_at", repr(now))
            if status == "failed":
                pipe.lpush(keys.HOOKS_DEAD, delivery_id)
                pipe.ltrim(keys.HOOKS_DEAD, 0, DEAD_KEPT - 1)
            pipe.execute()

    def drop(self, delivery_id: str) -> None:
        """Forget a due entry whose record is gone (expired, or ended)."""
        self.redis.zrem(keys.HOOKS_DUE, delivery_id)

    def deliveries(self, limit: int = 50, failed: bool = False, run_id: str | None = None) -> list[dict[str, str]]:
        """The newest deliveries (or the dead-letter list's, or one run's), with their id, newest first."""
        if run_id is not None:
            ids = sorted((_text(i) for i in self.redis.smembers(keys.run_hooks(run_id))), reverse=True)[:limit]
        elif failed:
            ids = [_text(i) for i in self.redis.lrange(keys.HOOKS_DEAD, 0, limit - 1)]
        else:
            ids = [_text(i) for i in self.redis.zrevrange(keys.HOOK_DELIVERIES, 0, limit - 1)]
        with self.redis.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                pipe.hgetall(keys.hook_delivery(delivery_id))
            raws = pipe.execute()
        return [{"id": i, **{_text(k): _text(v) for k, v in raw.items()}} for i, raw in zip(ids, raws) if raw]

    def replay(self, given: str) -> list[str]:
        """Send a delivery again (or every delivery of an event): due now, with a fresh retry window.

        :raises ConfigError: no such delivery or event.
        """
        if DELIVERY_ID.match(given):
            ids = [given]
        elif EVENT_ID.match(given):
            ids = [_text(m) for m, _ in self.redis.zscan_iter(keys.HOOK_DELIVERIES, match=f"{given}.*")]
        else:
            raise ConfigError(f"{given!r} is no delivery id (1733620000000-0.d0) or event id (1733620000000-0); "
                              "list them with `envflow hook deliveries`")
        ids = [i for i in ids if self.redis.exists(keys.hook_delivery(i))]
        if not ids:
            raise ConfigError(f"no delivery {given} is stored (they expire); list them with `envflow hook deliveries`")
        now = time.time()
        with self.redis.pipeline(transaction=True) as pipe:
            for delivery_id in ids:
                pipe.hset(keys.hook_delivery(delivery_id), mapping={"status": "pending", "first_try": repr(now)})
                pipe.zadd(keys.HOOKS_DUE, {delivery_id: now})
                pipe.lrem(keys.HOOKS_DEAD, 0, delivery_id)
            pipe.execute()
        return ids


def hook_store(redis: Redis, settings: Any) -> HookStore:
    """The hook store with a process's settings (``ENVFLOW_WEBHOOK_CLAIM_IDLE``, ``ENVFLOW_WEBHOOK_RETRY_FOR``):
    a delivery's record outlives its retries by a week."""
    return HookStore(redis, settings.webhook_claim_idle, int(settings.webhook_retry_for) + 7 * 24 * 3600)
