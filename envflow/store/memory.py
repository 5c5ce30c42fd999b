"""Where Redis's memory goes, by kind: run records, their output, the state indexes, queues (RQ's
jobs and lists), deployments. ``envflow stats`` prints it; the UI can show it.

Cheap at any size: counts come from the indexes and RQ's lists and registries; bytes from
``MEMORY USAGE`` of a random sample of runs and jobs (``ZRANDMEMBER``, ``LRANGE``), scaled to the
counts, and of every index and queue key itself (which Redis estimates from a few elements).
What no kind accounts for (Redis's own overhead, RQ's workers, deployment snapshots) is ``other``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from redis import Redis

from ..states import RunState
from . import keys
from .deployments import DeploymentStore
from .indexes import index_keys, indexed_deployments


@dataclass(frozen=True)
class Kind:
    """One kind of data: how many items, their bytes (estimated), and how the estimate was made."""

    name: str
    items: int
    bytes: int
    how: str

    @property
    def per_item(self) -> float:
        return self.bytes / self.items if self.items else 0.0


@dataclass(frozen=True)
class MemoryReport:
    used_memory: int  # INFO memory's used_memory: everything Redis holds, overheads included
    kinds: list[Kind] = field(default_factory=list)

    @property
    def other(self) -> int:
        return max(self.used_memory - sum(k.bytes for k in self.kinds), 0)


def _usage(client: Redis, names: list[str]) -> list[int]:
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name)
        return [int(n or 0) for n in pipe.execute()]


def _sample_runs(client: Redis, counts: dict[RunState, int], sample: int) -> list[str]:
    total = sum(counts.values())
    with client.pipeline(transaction=False) as pipe:
        for state, n in counts.items():
            if n:
                pipe.zrandmember(keys.state_index(state.value), max(1, math.ceil(sample * n / total)))
        picked = pipe.execute()
    return [m.decode() for group in picked for m in group]


def runs_and_output(client: Redis, sample: int) -> list[Kind]:
    """Run records and their output histories (streams, packed strings), from a sample of runs."""
    with client.pipeline(transaction=False) as pipe:
        for state in RunState:
            pipe.zcard(keys.state_index(state.value))
        counts = dict(zip(RunState, pipe.execute()))
    total = sum(counts.values())
    ids = _sample_runs(client, counts, sample) if total else []
    sizes = _usage(client, [name for i in ids for name in (keys.run(i), keys.output(i), keys.packed_output(i))])
    records, outputs = sum(sizes[0::3]), sum(sizes[1::3]) + sum(sizes[2::3])
    scale = total / len(ids) if ids else 0.0
    how = f"{len(ids):,} of {total:,} runs sampled" if ids else "no runs"
    with_output = sum(1 for a, b in zip(sizes[1::3], sizes[2::3]) if a or b)
    return [
        Kind("runs", total, round(records * scale), how),
        Kind("output", round(with_output * scale), round(outputs * scale), f"{with_output:,} of the sampled runs have output"),
    ]


def indexes(client: Redis) -> Kind:
    """The state indexes, overall and per deployment, and the reaper's two; items are their entries."""
    names = index_keys() + [k for d in indexed_deployments(client) for k in index_keys(d)]
    names += [keys.ACTIVE_RUNS, keys.PENDING_RUNS]
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(name)
        entries = sum(pipe.execute())
    sizes = _usage(client, [*names, keys.INDEXED_DEPLOYMENTS])
    return Kind("indexes", entries, sum(sizes), f"{sum(1 for s in sizes if s):,} index keys")


def queues(client: Redis, sample: int) -> Kind:
    """RQ's queues: their lists and registries, and the jobs they hold (a sample of them measured)."""
    queue_keys = sorted(q.decode() for q in client.smembers(keys.RQ_QUEUES))
    names = [q.removeprefix(keys.RQ_QUEUE_PREFIX) for q in queue_keys]
    registries = [keys.rq_registry(kind, n) for n in names for kind in keys.RQ_REGISTRIES]
    with client.pipeline(transaction=False) as pipe:
        for key in queue_keys:
            pipe.llen(key)
        for key in registries:
            pipe.zcard(key)
        for key in queue_keys:
            pipe.lrange(key, 0, max(sample // max(len(queue_keys), 1), 1) - 1)
        found = pipe.execute()
    jobs = sum(found[: len(queue_keys) + len(registries)])
    sampled = [f"{keys.RQ_JOB_PREFIX}{j.decode()}" for group in found[len(queue_keys) + len(registries):] for j in group]
    job_sizes = [s for s in _usage(client, sampled) if s]
    per_job = sum(job_sizes) / len(job_sizes) if job_sizes else 0.0
    containers = sum(_usage(client, queue_keys + registries))
    how = f"{len(job_sizes):,} of {jobs:,} jobs sampled" if job_sizes else "no queued jobs to sample"
    return Kind("queues", jobs, round(containers + per_job * jobs), how)


def deployments(client: Redis) -> Kind:
    """Deployment records and the flow sources they store."""
    store = DeploymentStore(client)
    names = store.names()
    digests = {d.source_digest for d in store.all()}
    sources = [keys.source(d) for d in digests if d]
    return Kind("deployments", len(names), sum(_usage(client, [keys.DEPLOYMENTS, *map(keys.deployment, names), *sources])),
                "every deployment and flow source")


def report(client: Redis, sample: int = 200) -> MemoryReport:
    """Redis's memory by kind, estimated from ``sample`` runs and jobs."""
    used = int(client.info("memory")["used_memory"])
    return MemoryReport(used, [*runs_and_output(client, sample), indexes(client), queues(client, sample),
                               deployments(client)])
