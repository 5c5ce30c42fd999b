"""The cost of waiting for a replica on a run's creation (``ENVFLOW_REDIS_WAIT_REPLICAS``).

A replica of the bench's redis-server is started for this case (``--replicaof``, loopback). Then
``RunStore.create`` (a run's MULTI/EXEC, what ``Client.run()`` enqueues) is timed with no wait and
with ``WAIT 1`` after it (the mark and the wait: ``envflow/store/replication.py``), samples
interleaved, in a database of its own (flushed after). No worker takes the runs. The difference is
what a Sentinel deployment's default guarantee (a returned run survives a failover) costs per enqueue.
"""

from __future__ import annotations

import shutil
import time

import redis

from envflow.client import Client

from .. import stats
from ..harness import base_environ, free_port
from ..procs import Child
from ..report import Row
from . import Context, Result

DB = 7


def run(ctx: Context) -> Result:
    h = ctx.harness
    replica = _start_replica(h)
    try:
        url = h.db_url(DB)
        plain = Client(settings=h.settings(redis_url=url, redis_wait_replicas=0))
        waiting = Client(settings=h.settings(redis_url=url, redis_wait_replicas=1, redis_wait_timeout=5.0))
        plain.create_deployment(h.client.get_deployment(h.deploy("hello")))
        record = plain.get_deployment(h.deploy("hello"))
        samples: dict[str, list[float]] = {"no wait": [], "WAIT 1": []}
        for i in range(ctx.sizes.dispatch_samples * 2):
            for label, client in (("no wait", plain), ("WAIT 1", waiting)) if i % 2 else (("WAIT 1", waiting), ("no wait", plain)):
                began = time.perf_counter()
                client.store.create(record, {})
                samples[label].append(time.perf_counter() - began)
        acked = waiting.store.replicas.wait("check")
        if acked != 1:
            raise RuntimeError(f"the replica confirmed {acked} of 1")
    finally:
        redis.Redis.from_url(h.db_url(DB)).flushdb()
        replica.stop()
    off, on = stats.percentile(samples["no wait"], 50), stats.percentile(samples["WAIT 1"], 50)
    rows = [Row(case="enqueue p50 with WAIT 1 (a replica on loopback)", envflow=stats.ms(on),
                baselines=[f"no WAIT {stats.ms(off)}"], ratios=[f"{stats.delta_ms(on - off)} ({stats.ratio(on, off):.1f}×)"])]
    notes = [f"replication: {len(samples['WAIT 1'])} enqueues each, interleaved; p99 WAIT "
             f"{stats.ms(stats.percentile(samples['WAIT 1'], 99))}, no WAIT {stats.ms(stats.percentile(samples['no wait'], 99))}."]
    return Result(rows, notes, {k: v for k, v in samples.items()})


def _start_replica(h) -> Child:  # type: ignore[no-untyped-def]
    port = free_port()
    data = h.root / "replica"
    data.mkdir(exist_ok=True)
    child = Child("redis-replica", [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                    "127.0.0.1", "--dir", str(data), "--save", "", "--appendonly", "no",
                                    "--replicaof", "127.0.0.1", str(h.port)],
                  h.logs / "replica.log", base_environ(), h.root)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        slave = h.redis.info("replication").get("slave0", {})
        if isinstance(slave, dict) and slave.get("state") == "online":
            return child
        time.sleep(0.1)
    child.stop()
    raise RuntimeError("the replica did not come in sync")
