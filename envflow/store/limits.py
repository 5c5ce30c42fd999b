"""Concurrency limits: each limit's slots, the runs holding them and the runs in line for them.

A limit is a name with a number of slots: a tag's name (every run of a deployment with that tag is
under it) or ``deployment:<flow>/<name>``, a deployment's own (its ``concurrency_limit``). Slots
change hands only in the run protocol's scripts (``lua/_limits.lua``): a claim takes one of each of
the run's limits or none, the script that ends the attempt frees them and wakes the next run in
line. This module sets limits (through ``limit.lua``) and reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from . import keys
from .protocol import RunScripts


@dataclass(frozen=True)
class LimitInfo:
    """One limit as it stands: its slots, who holds them, how many runs are in line."""

    name: str
    slots: int
    holders: dict[str, int]  # run id -> the attempt that holds the slot
    waiting: int  # runs in line (parked, or kept in line while they wait for another limit)

    @property
    def in_use(self) -> int:
        return len(self.holders)

    @property
    def deployment(self) -> str | None:
        """The deployment whose own limit this is, if it is one."""
        prefix = keys.DEPLOYMENT_LIMIT_PREFIX
        return self.name[len(prefix):] if self.name.startswith(prefix) else None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "slots": self.slots, "in_use": self.in_use, "holders": self.holders,
                "waiting": self.waiting, "deployment": self.deployment}


class Limits:
    """Sets, removes and reads concurrency limits."""

    def __init__(self, redis: Redis, scripts: RunScripts) -> None:
        self.redis = redis
        self.scripts = scripts

    def set(self, name: str, slots: int) -> None:
        """Give the limit ``name`` this many slots; it takes effect at once (runs in line that it now
        admits start)."""
        self.scripts.set_limit(name, slots).run()

    def remove(self, name: str) -> bool:
        """Remove a limit (its runs in line are woken); False when there was none."""
        return self.scripts.set_limit(name, None).run()

    def all(self) -> list[LimitInfo]:
        """Every limit, by name, each read in one pipelined round trip."""
        slots = {k.decode(): int(v) for k, v in self.redis.hgetall(keys.LIMITS).items()}
        names = sorted(slots)
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.limit_holders(name))
                pipe.zcard(keys.limit_waiting(name))
            raw = pipe.execute()
        return [LimitInfo(name, slots[name], {k.decode(): int(v) for k, v in raw[2 * i].items()}, int(raw[2 * i + 1]))
                for i, name in enumerate(names)]
