"""Concurrency limits: what a limit costs a run that never waits, and how fast a slot changes hands.

- dispatch: enqueue -> final state of ``hello`` (``Client.run().wait()``), worker idle, for the flow
  deployed without a limit and with a ``concurrency_limit`` it never reaches (1,000), taking turns
  sample by sample (goal: p50 ≤ 1.05×);
- throughput: batches of runs handed over at once (one MULTI/EXEC) to 2 workers, the same two
  deployments taking turns batch by batch, runs/s (goal ≤ 1.05× the time);
- handover: a batch queued at once on a limit of 1 with 3 workers; for each run after the first,
  its claim's time minus the end of the run before it (both from the run records, written by the
  scripts), p50/p99 (goal ≤ 5 ms / 50 ms); the baseline is the same batch, no limit, on 1 worker
  (its own gap between a run's end and its next claim). Redis commands per run of both batches
  (``INFO commandstats``, the scripts' inner calls included).
"""

from __future__ import annotations

import time

from envflow.deployments import Deployment
from envflow.models import RunState
from envflow.store import keys

from .. import stats
from ..harness import Harness
from ..report import Row
from . import Context, Result

TIMEOUT = 30
WARMUP = 3


def _deploy(h: Harness, name: str, **fields: object) -> str:
    return h.client.create_deployment(Deployment(name=name, flow_location=str(h.files.path("hello")), flow_name="hello",
                                                 virtualenv=str(h.venv), stream_output=False, **fields)).name


def _batch(h: Harness, name: str, n: int) -> tuple[float, list[str], dict[str, int]]:
    """Hand ``n`` runs over at once; the seconds until all ended, their ids and the Redis commands run."""
    client = h.client
    record = client.get_deployment(name)
    h.wait_idle()
    before = h.command_calls()
    pipe = client.redis.pipeline(transaction=True)
    ids = [client.store.create(record, {}, pipeline=pipe) for _ in range(n)]
    t0 = time.perf_counter()
    pipe.execute()
    deadline, polls = time.monotonic() + 60 + n, 0
    while True:
        with client.redis.pipeline(transaction=False) as p:
            p.zcard(keys.PENDING_RUNS)
            p.zcard(keys.ACTIVE_RUNS)
            if not sum(p.execute()):
                break
        polls += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"limits: {n} runs of {name} did not end in time")
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    after = h.command_calls()
    commands = {k: v - before.get(k, 0) for k, v in after.items()}
    commands["zcard"] = commands.get("zcard", 0) - 2 * (polls + 1)
    commands["info"] = commands.get("info", 0) - 1
    return elapsed, ids, commands


def _gaps(h: Harness, ids: list[str]) -> list[float]:
    """Each run's claim minus the end of the run that ended before it started."""
    spans = []
    for record in (h.client.store.get(i) for i in ids):
        if record.state is not RunState.COMPLETED:
            raise RuntimeError(f"limits: run {record.id} ended {record.state.value}")
        marks = {state: ts for state, ts, _ in record.transitions}
        spans.append((marks["RUNNING"], marks["COMPLETED"]))
    spans.sort()
    return [start - prev_end for (_, prev_end), (start, _) in zip(spans, spans[1:])]


def run(ctx: Context) -> Result:
    h = ctx.harness
    free = _deploy(h, "bench-free")
    limited = _deploy(h, "bench-limited", concurrency_limit=1000)
    one = _deploy(h, "bench-one", concurrency_limit=1)
    client = h.client

    h.use_workers(envflow=1)
    dispatch: dict[str, list[float]] = {free: [], limited: []}
    for i in range(WARMUP + ctx.sizes.dispatch_samples):
        for name in (free, limited):
            h.wait_idle()
            t0 = time.perf_counter()
            if client.run(name).wait(TIMEOUT) is not RunState.COMPLETED:
                raise RuntimeError(f"limits: a run of {name} did not complete")
            if i >= WARMUP:
                dispatch[name].append(time.perf_counter() - t0)

    n = ctx.sizes.throughput_runs
    base_seconds, base_ids, base_commands = _batch(h, free, n)  # 1 worker, no limit
    h.use_workers(envflow=2)
    rates: dict[str, list[float]] = {free: [], limited: []}  # seconds per batch of m runs
    m = max(n // ctx.sizes.throughput_rounds, 1)
    for _ in range(ctx.sizes.throughput_rounds):
        for name in (free, limited):
            rates[name].append(_batch(h, name, m)[0])
    h.use_workers(envflow=3)
    one_seconds, one_ids, one_commands = _batch(h, one, n)
    return _result(dispatch, rates, m, _gaps(h, one_ids), _gaps(h, base_ids), one_commands, base_commands, n,
                   free, limited)


def _result(dispatch: dict[str, list[float]], rates: dict[str, list[float]], m: int, gaps: list[float],
            base_gaps: list[float], commands: dict[str, int], base_commands: dict[str, int], n: int,
            free: str, limited: str) -> Result:
    p50 = {k: stats.percentile(v, 50) for k, v in dispatch.items()}
    rate = {k: m * len(v) / sum(v) for k, v in rates.items()}
    g = stats.summary(gaps)
    b = stats.summary(base_gaps)
    per_run = sum(v for v in commands.values() if v > 0) / n
    base_per_run = sum(v for v in base_commands.values() if v > 0) / n
    rows = [
        Row("limit never reached: dispatch p50 (enqueue → final state)", stats.ms(p50[limited]),
            [f"no limit {stats.ms(p50[free])}"], [f"{stats.ratio(p50[limited], p50[free]):.2f}×"], "≤ 1.05×",
            stats.ratio(p50[limited], p50[free]) <= 1.05),
        Row("limit never reached: runs/s, 2 workers", stats.rate(rate[limited], "runs"),
            [f"no limit {stats.rate(rate[free], 'runs')}"], [f"{stats.ratio(rate[limited], rate[free]):.2f}×"],
            "≥ 0.95×", stats.ratio(rate[limited], rate[free]) >= 0.95),
        Row("limit of 1, 3 workers: end → next start p50", stats.ms(g["p50"]),
            [f"1 worker, no limit {stats.ms(b['p50'])}"], [f"{stats.ratio(g['p50'], b['p50']):.2f}×"], "≤ 5 ms",
            g["p50"] <= 0.005),
        Row("limit of 1, 3 workers: end → next start p99", stats.ms(g["p99"]),
            [f"1 worker, no limit {stats.ms(b['p99'])}"], [f"{stats.ratio(g['p99'], b['p99']):.2f}×"], "≤ 50 ms",
            g["p99"] <= 0.050),
        Row("limit of 1, 3 workers: Redis commands per run", f"{per_run:.1f}",
            [f"1 worker, no limit {base_per_run:.1f}"], [f"{per_run - base_per_run:+.1f}"]),
    ]
    notes = [f"limits: n = {len(next(iter(dispatch.values())))} dispatch samples each, after {WARMUP} warm-up runs; "
             f"{n} runs per handover batch (the runs a limit of 1 keeps waiting are parked, then woken one by one)."]
    raw = {"dispatch": dispatch, "rates": rates, "gaps": gaps, "base_gaps": base_gaps, "commands": commands,
           "base_commands": base_commands}
    return Result(rows, notes, raw)
