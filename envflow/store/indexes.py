"""The state indexes: which runs are in which state, overall and per deployment.

``envflow:runs:state:<STATE>`` and ``envflow:runs:state:<STATE>:<deployment>`` are sorted sets of
run ids scored by creation time. A run is in exactly one state's pair: ``RunStore.create`` adds
it (:func:`add`), and ``store/lua/_lib.lua``'s ``transition`` moves it in the same script as every state
change. So a listing filtered by deployment and/or state reads one index, or merges eight
newest-first (``queries.py``), whatever the number of runs.

Retention: a run's record expires ``run_ttl`` after it ended. :meth:`IndexMaintenance.trim` removes
the index entries of runs created more than ``run_ttl`` ago whose record is gone. The reaper's
periodic pass runs it, at most once a minute cluster-wide.
"""

from __future__ import annotations

import time

import redis
from redis import Redis
from redis.client import Pipeline

from ..states import FINAL_STATES, RunState
from . import keys

TRIM_INTERVAL = 60.0  # seconds between trims, cluster-wide
TRIM_BUDGET = 20_000  # index entries one trim examines at most (it goes on at the next)
PAGE = 1000
# A sorted set that grew keeps its larger encoding when it shrinks: a trim rebuilds an index left
# with at most LISTPACK_ENTRIES entries (Redis's default zset-max-listpack-entries, under which a
# fresh one is a compact listpack), or using COMPACT_SLACK times what ENTRY_BYTES an entry would take.
LISTPACK_ENTRIES = 128
COMPACT_SLACK = 4
ENTRY_BYTES = 150


def add(pipe: Pipeline, run_id: str, deployment: str, state: RunState, created: float) -> None:
    """Index a new run (in ``pipe``, with the writes that create it)."""
    pipe.zadd(keys.state_index(state.value), {run_id: created})
    pipe.zadd(keys.state_index(state.value, deployment), {run_id: created})
    pipe.sadd(keys.INDEXED_DEPLOYMENTS, deployment)


def index_keys(deployment: str | None = None, states: list[RunState] | None = None) -> list[str]:
    """The indexes holding the runs of ``deployment`` (all when None) in ``states`` (all when None)."""
    return [keys.state_index(s.value, deployment) for s in (states or list(RunState))]


def indexed_deployments(client: Redis) -> list[str]:
    return sorted(d.decode() for d in client.smembers(keys.INDEXED_DEPLOYMENTS))


class IndexMaintenance:
    """Trims expired runs from the state indexes."""

    def __init__(self, client: Redis, run_ttl: int) -> None:
        self.redis = client
        self.run_ttl = run_ttl

    def maintain(self, holder: str) -> None:
        """One pass, from the reaper: a trim, once a minute cluster-wide."""
        if self.redis.set(keys.INDEXES_LOCK, holder, nx=True, px=int(TRIM_INTERVAL * 1000)):
            self.trim()

    def trim(self, now: float | None = None, budget: int = TRIM_BUDGET) -> int:
        """Remove the entries of ended runs created before ``now - run_ttl`` whose record has expired.

        :returns: how many entries were removed.
        """
        cutoff = (time.time() if now is None else now) - self.run_ttl
        deployments = indexed_deployments(self.redis)
        removed = 0
        for deployment in [None, *deployments]:
            for key in index_keys(deployment, sorted(FINAL_STATES)):
                gone, examined = self._trim_key(key, cutoff, budget)
                removed, budget = removed + gone, budget - examined
                if budget <= 0:
                    return removed
        for deployment in deployments:
            self._forget_if_empty(deployment)
        return removed

    def _trim_key(self, key: str, cutoff: float, budget: int) -> tuple[int, int]:
        removed = examined = kept = 0
        while examined < budget:
            ids = [i.decode() for i in self.redis.zrangebyscore(key, "-inf", cutoff, start=kept, num=PAGE)]
            if not ids:
                break
            with self.redis.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.exists(keys.run(run_id))
                alive = pipe.execute()
            gone = [run_id for run_id, live in zip(ids, alive) if not live]
            if gone:
                self.redis.zrem(key, *gone)
            removed, kept, examined = removed + len(gone), kept + len(ids) - len(gone), examined + len(ids)
            if len(ids) < PAGE:
                break
        if removed:
            self._compact(key)
        return removed, examined

    def _compact(self, key: str) -> None:
        """Rebuild an index that shrank far below what it was sized for (a copy gets the smallest
        encoding for its size), in one transaction."""
        size = self.redis.zcard(key)
        if not size:
            return
        if size > LISTPACK_ENTRIES or self.redis.object("encoding", key) != b"skiplist":
            if (self.redis.memory_usage(key) or 0) <= COMPACT_SLACK * size * ENTRY_BYTES + 16 * 1024:
                return
        spare = key + ":compacting"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrangestore(spare, key, 0, -1)
            pipe.rename(spare, key)
            pipe.execute(raise_on_error=False)  # emptied meanwhile: nothing to rename, nothing lost

    def _forget_if_empty(self, deployment: str) -> None:
        """Drop a deployment from the indexed set once it has no index left (unless a run is added meanwhile)."""
        names = index_keys(deployment)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*names)
                if pipe.exists(*names):
                    return
                pipe.multi()
                pipe.srem(keys.INDEXED_DEPLOYMENTS, deployment)
                pipe.execute()
            except redis.exceptions.WatchError:
                pass
