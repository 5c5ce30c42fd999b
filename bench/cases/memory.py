"""Memory: the worker's RSS idle and while streaming 1M lines; Redis bytes per run and per 1,000 lines.

The worker's RSS (``VmRSS``) comes from the streaming case's live run when it ran in the
same benchmark (otherwise this case runs the 1M-line flow itself, without a follower).
Redis figures are ``MEMORY USAGE <key> SAMPLES 0`` (exact): a finished one-line run at rest
and a pending run, each beside raw RQ's job doing the same work (``bench/runbytes.py``), and
the 1M-line run's history per 1,000 lines.
"""

from __future__ import annotations

from envflow.models import RunState
from envflow.store import keys

from .. import runbytes, stats
from ..procs import RssSampler, rss_bytes
from ..report import Row
from . import Context, Result

FLAT_BYTES = 10 * 2**20
FINISHED_TARGET = 2048
PENDING_TARGET = 1536
PENDING_RUNS = {True: 2_000, False: 10_000}  # --quick, full


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers(envflow=1)
    streamed = ctx.shared.get("streaming")
    if streamed is None or streamed["worker_pid"] != h.envflow_workers[0].pid:
        streamed = _stream_without_follower(ctx)

    # A finished one-line run, and a pending run, beside raw RQ's job for the same work.
    h.use_workers(envflow=1, rq_simple=1)
    finished = runbytes.finished_envflow(h)
    finished_rq = runbytes.finished_rq(h)
    waiting = runbytes.pending(h, PENDING_RUNS[ctx.quick])
    run_rows, run_note = _run_rows(finished, finished_rq, waiting, PENDING_RUNS[ctx.quick])

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
        *run_rows,
        Row(
            case="Redis bytes per 1,000 lines of history",
            envflow=f"{per_1000:,.0f} B",
            baselines=[f"{entries:,} stream entries for {streamed['lines']:,} lines"],
        ),
    ]
    notes = [f"memory: RSS sampled every 50 ms ({len(values)} samples). {run_note}"]
    raw = {
        "idle_rss": idle,
        "after_rss": streamed["after_rss"],
        "rss_samples": streamed["rss_samples"],
        "finished": finished,
        "finished_rq": finished_rq,
        "pending": waiting,
        "history_bytes": big_history,
        "history_entries": entries,
        "history_lines": streamed["lines"],
    }
    return Result(rows, notes, raw)


def _run_rows(finished: dict, finished_rq: dict, waiting: dict, n: int) -> tuple[list[Row], str]:
    """Rows for a finished one-line run and a pending run beside raw RQ's job, and a note listing their keys."""
    index_entry = sum(v for k, v in waiting["envflow"]["keys"].items() if k.startswith(keys.STATE_INDEX_PREFIX)) / 2
    per_run = sum(finished.values()) + 2 * index_entry
    per_pending = sum(waiting["envflow"]["keys"].values())
    per_rq_pending = sum(waiting["rq"]["keys"].values())
    rows = [
        Row(
            case="Redis bytes per finished one-line run, at rest",
            envflow=f"{per_run:,.0f} B",
            baselines=[f"raw RQ's job, same work: {sum(finished_rq.values()):,} B"],
            ratios=[f"{per_run / sum(finished_rq.values()):.2f}x raw RQ"],
            target=f"<= {FINISHED_TARGET:,} B",
            met=per_run <= FINISHED_TARGET,
        ),
        Row(
            case=f"Redis bytes per pending run ({n:,} waiting)",
            envflow=f"{per_pending:,.0f} B",
            baselines=[f"raw RQ's job, same work: {per_rq_pending:,.0f} B",
                       f"used_memory growth: {waiting['envflow']['used_memory_per_run']:,.0f} B "
                       f"(raw RQ {waiting['rq']['used_memory_per_run']:,.0f} B)"],
            ratios=[f"{per_pending / per_rq_pending:.2f}x raw RQ"],
            target=f"<= {PENDING_TARGET:,} B",
            met=per_pending <= PENDING_TARGET,
        ),
    ]

    def listing(found: dict) -> str:
        return ", ".join(f"{k} {v:,.0f} B" for k, v in found.items())

    note = (f"A finished one-line run: {listing(finished)}, plus 2 index entries of {index_entry:,.0f} B (as in big "
            f"indexes); raw RQ's: {listing(finished_rq)}. A pending run: {listing(waiting['envflow']['keys'])}; "
            f"raw RQ's: {listing(waiting['rq']['keys'])}.")
    return rows, note


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
