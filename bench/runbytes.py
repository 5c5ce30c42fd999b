"""Redis bytes per run: a finished one-line run at rest, and a pending run, beside raw RQ's job doing
the same work (``bench/rqjobs.py``: the same subprocess). Figures are ``MEMORY USAGE <key>
SAMPLES 0`` (exact).

A run's own keys are measured whole. What it adds to shared keys (the state indexes, the
reaper's pending set, the queue's list) is measured where those keys are big, as at a busy site:
``PENDING`` runs enqueued in a database of their own, each shared key's bytes divided by its
entries. A finished run's two index entries cost what a pending run's do (same members, same
scores, same encoding once an index holds more than 128 runs).
"""

from __future__ import annotations

import time
from typing import Any

import redis
from rq import Queue

from envflow.client import Client
from envflow.models import RunState
from envflow.store import keys

from .harness import Harness, rq_queue
from .rqjobs import spawn_flow

PENDING_DB = 4


def usage(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def keys_of(client: redis.Redis, ident: str) -> dict[str, int]:
    """Every key whose name holds ``ident``, with its bytes."""
    return {k.decode(): usage(client, k.decode()) for k in client.scan_iter(match=f"*{ident}*", count=1000)}


def finished_envflow(h: Harness) -> dict[str, int]:
    """A one-line run of the hello flow, finished, once the worker is idle: its keys."""
    flow_run = h.client.run(h.deploy("hello"))
    if flow_run.wait(60) is not RunState.COMPLETED:
        raise RuntimeError(f"run {flow_run.id} failed")
    h.wait_idle(settle=0.2)  # the worker's RQ bookkeeping for the job ends after the run's final state
    assert h.redis is not None
    return {k.replace(flow_run.id, "<id>"): v for k, v in keys_of(h.redis, flow_run.id).items()}


def finished_rq(h: Harness) -> dict[str, int]:
    """Raw RQ's job running the same subprocess on a ``SimpleWorker``, finished: its keys (RQ keeps them
    for the job's result ttl, 500 s by default), and its entry in the finished registry."""
    assert h.redis is not None
    queue = Queue(rq_queue("simple"), connection=h.redis)
    job = queue.enqueue(spawn_flow, h.venv_python, str(h.files.floor_path("hello")))
    if job.latest_result(timeout=60) is None:
        raise RuntimeError(f"raw RQ job {job.id} did not finish")
    h.wait_idle(settle=0.2)
    found = {k.replace(job.id, "<id>"): v for k, v in keys_of(h.redis, job.id).items()}
    registry = f"rq:finished:{queue.name}"
    found[f"{registry} (its share)"] = usage(h.redis, registry) // max(h.redis.zcard(registry), 1)
    return found


def pending(h: Harness, n: int) -> dict[str, Any]:
    """``n`` envflow runs and ``n`` raw RQ jobs left waiting (no worker serves their queues): bytes per
    run of each key kind, and Redis's used_memory growth per run."""
    url = h.db_url(PENDING_DB)
    client = Client(settings=h.settings(redis_url=url, queue="bench-pending"))
    r = client.redis
    try:
        record = _pending_deployment(client, h)
        envflow = _grow(r, lambda pipe: client.store.create(record, {}, pipeline=pipe), n)
        run_id = envflow.pop("last")
        shared = [keys.state_index("PENDING"), keys.state_index("PENDING", record.name), keys.PENDING_RUNS,
                  "rq:queue:bench-pending"]
        envflow["keys"] = {"envflow:run:<id>": usage(r, keys.run(run_id)), "rq:job:<id>": usage(r, f"rq:job:{run_id}"),
                           **{f"{k} (its share)": usage(r, k) / n for k in shared}}
        queue = Queue("bench-pending-rq", connection=r)
        args = (h.venv_python, str(h.files.floor_path("hello")))
        raw = _grow(r, lambda pipe: queue.enqueue(spawn_flow, *args, pipeline=pipe).id, n)
        job_id = raw.pop("last")
        raw["keys"] = {"rq:job:<id>": usage(r, f"rq:job:{job_id}"), "rq:queue:<q> (its share)": usage(r, queue.key) / n}
        return {"envflow": envflow, "rq": raw}
    finally:
        r.flushdb()
        r.close()


def _pending_deployment(client: Client, h: Harness):  # type: ignore[no-untyped-def]
    """The bench's hello deployment, registered in the pending runs' database."""
    assert h.redis is not None
    record = client.create_deployment(h.client.get_deployment(h.deploy("hello")))
    return record.model_copy(update={"queue": "bench-pending"})


def _grow(r: redis.Redis, make, n: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Make ``n`` items in batches of 1,000 pipelined; used_memory growth per item, and the last item's id."""
    last = ""
    before = int(r.info("memory")["used_memory"])
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=True)
        for _ in range(min(1000, n - start)):
            last = make(pipe)
        pipe.execute()
    time.sleep(0.05)
    return {"used_memory_per_run": (int(r.info("memory")["used_memory"]) - before) / n, "last": last}
