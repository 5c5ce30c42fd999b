"""Memory: the worker's RSS idle and while streaming 1M lines; Redis bytes per run and per 1,000 lines.

The worker's RSS (``VmRSS``) comes from the streaming case's live run when it ran in the
same benchmark (otherwise this case runs the 1M-line flow itself, without a follower).
Redis figures are ``MEMORY USAGE <key> SAMPLES 0`` (exact): a finished trivial run's
record (its hash, its output history with one line and the end record, and its entries in
the run indexes), and the 1M-line run's history per 1,000 lines.
"""

from __future__ import annotations

from envflow import keys
from envflow.models import RunState

from .. import stats
from ..procs import RssSampler, rss_bytes
from ..report import Row
from . import Context, Result

FLAT_BYTES = 10 * 2**20
INDEX_ENTRY = 64  # rough bytes of one member in a small zset (envflow:runs and envflow:runs:dep:*)


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers(envflow=1)
    client = h.client
    streamed = ctx.shared.get("streaming")
    if streamed is None or streamed["worker_pid"] != h.envflow_workers[0].pid:
        streamed = _stream_without_follower(ctx)

    # A finished trivial run, and what it leaves in Redis.
    flow_run = client.run(h.deploy("hello"))
    if flow_run.wait(60) is not RunState.COMPLETED:
        raise RuntimeError(f"run {flow_run.id} failed")
    h.wait_idle(settle=0.2)  # the worker's RQ bookkeeping for the job ends after the run's final state
    record_bytes = _usage(h.redis, keys.run(flow_run.id))
    history_bytes = _usage(h.redis, keys.output(flow_run.id))
    leftovers = sorted(k.decode() for k in h.redis.scan_iter(match=f"*{flow_run.id}*"))
    leftover_bytes = {k: b for k in leftovers if (b := _usage(h.redis, k))}
    per_run = sum(leftover_bytes.values()) + 2 * INDEX_ENTRY

    big_history = _usage(h.redis, keys.output(streamed["run_id"]))
    entries = h.redis.xlen(keys.output(streamed["run_id"]))
    per_1000 = big_history / (streamed["lines"] / 1000)

    idle = streamed["idle_rss"]
    values = [v for _, v in streamed["rss_samples"]]
    peak = max(values) if values else idle
    growth = peak - idle
    rows = [
        Row(case="worker RSS, idle (after warm-up runs)", envflow=stats.mib(idle)),
        Row(
            case=f"worker RSS while streaming {streamed['lines']:,} lines",
            envflow=f"peak {stats.mib(peak)}",
            baselines=[f"idle {stats.mib(idle)}", f"after the run {stats.mib(streamed['after_rss'] or 0)}"],
            ratios=[f"{'+' if growth >= 0 else ''}{stats.mib(growth)} over idle"],
            target="flat (± 10 MiB)",
            met=abs(growth) <= FLAT_BYTES,
        ),
        Row(
            case="Redis bytes per finished trivial run",
            envflow=f"{per_run:,} B",
            baselines=[f"run hash {record_bytes:,} B", f"history (1 line + end) {history_bytes:,} B"],
        ),
        Row(
            case="Redis bytes per 1,000 lines of history",
            envflow=f"{per_1000:,.0f} B",
            baselines=[f"{entries:,} stream entries for {streamed['lines']:,} lines"],
        ),
    ]
    notes = [
        f"memory: RSS sampled every 50 ms ({len(values)} samples); a finished run's keys: "
        + ", ".join(f"{k.replace(flow_run.id, '<id>')} {v:,} B" for k, v in leftover_bytes.items())
        + f", plus ~{INDEX_ENTRY} B in each of 2 run indexes."
    ]
    raw = {
        "idle_rss": idle,
        "after_rss": streamed["after_rss"],
        "rss_samples": streamed["rss_samples"],
        "run_keys": leftover_bytes,
        "history_bytes": big_history,
        "history_entries": entries,
        "history_lines": streamed["lines"],
    }
    return Result(rows, notes, raw)


def _usage(redis, key: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis.memory_usage(key, samples=0) or 0)


def _stream_without_follower(ctx: Context) -> dict:
    h = ctx.harness
    client = h.client
    worker = h.envflow_workers[0]
    name = h.deploy("lines")
    n = ctx.sizes.stream_lines
    if client.run(name, {"n": 1000}).wait(60) is not RunState.COMPLETED:
        raise RuntimeError("warm-up run failed")
    h.wait_idle(settle=0.2)
    idle = rss_bytes(worker.pid)
    with RssSampler(worker.pid) as sampler:
        flow_run = client.run(name, {"n": n})
        state = flow_run.wait(60 + n / 5000)
    if state is not RunState.COMPLETED:
        raise RuntimeError(f"run {flow_run.id} ended {state.value}")
    h.wait_idle(settle=0.2)
    return {
        "run_id": flow_run.id,
        "lines": n,
        "worker_pid": worker.pid,
        "idle_rss": idle,
        "after_rss": rss_bytes(worker.pid),
        "rss_samples": sampler.samples,
    }
