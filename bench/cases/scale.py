"""Listings at scale, and retention: the same queries at 100 runs and at 1,000,000 (``--quick``: 20,000).

Two databases of the bench's redis-server: one with 100 finished runs, one with 100 plus the
large fill (``bench/fill.py``: by pipeline, no worker; 1 run in 100 is the small deployment's,
1 in 100 failed). Then, interleaved between the two databases:

- ``Queries.runs`` (what ``run ls`` reads) unfiltered, by state, by deployment, by both; the
  rarest filter (the small deployment's failed runs) is 1 run in 10,000 of the large database;
- the whole ``envflow run ls --limit 20`` process at each size, beside ``python -c "import click, redis"``;
- the web UI's overview (``envflow.ui.overview.read``: counts by state and span, the newest running,
  waiting and failed runs, the fleet), p50 and p95.

Retention: the filled runs' records are made to expire, then the index trim (the reaper's pass,
its clock a run ttl ahead) runs until it finds nothing more; the index entries must be back to
what they were before the fill.
"""

from __future__ import annotations

import statistics
import time

import redis

from envflow.states import RunState
from envflow.store.memory import indexes as index_usage
from envflow.store.queries import Queries
from envflow.store.reaper import Reaper

from .. import stats
from ..clitime import BASELINE, baseline_argv, envflow_argv, environ, interleaved
from ..fill import Mix, fill
from ..report import Row
from . import Context, Result

SMALL_DB, LARGE_DB = 1, 2
RATIO_TARGET = 1.2
CLI_TARGET = 1.3
QUERIES = {
    "newest": {},
    "--state FAILED": {"state": RunState.FAILED},
    "--deployment small": {"deployment": "scale/small"},
    "--deployment small --state FAILED": {"deployment": "scale/small", "state": RunState.FAILED},
}


def run(ctx: Context) -> Result:
    h = ctx.harness
    n = ctx.sizes.scale_runs
    urls = {size: h.db_url(db) for size, db in (("100", SMALL_DB), ("large", LARGE_DB))}
    clients = {size: redis.Redis.from_url(url) for size, url in urls.items()}
    try:
        for url in urls.values():
            fill(h.settings(redis_url=url), 96, Mix("scale/big", "scale/small", every=2))  # + 4 templates
        before = index_usage(clients["large"])
        started = time.monotonic()
        ids = fill(h.settings(redis_url=urls["large"]), n, Mix("scale/big", "scale/small", every=100),
                   progress=lambda k: k % 200_000 == 0 and ctx.log(f"scale: {k:,} runs filled"))
        fill_seconds = time.monotonic() - started
        filled = index_usage(clients["large"])
        query_samples = _time_queries(clients, ctx.sizes.scale_rounds)
        overview_samples = _time_overview(h, urls, ctx.sizes.scale_rounds)
        env = {size: environ(url) for size, url in urls.items()}
        argv = [*envflow_argv(), "run", "ls", "--limit", "20"]
        cli = interleaved({"baseline": (baseline_argv(), env["100"]), "100": (argv, env["100"]),
                           "large": (argv, env["large"])}, ctx.sizes.cli_rounds)
        trimmed, passes, trim_seconds = _expire_and_trim(h, clients["large"], ids)
        after = index_usage(clients["large"])
    finally:
        for client in clients.values():
            client.flushdb()
            client.close()
    size = f"{n:,}"
    rows = _query_rows(query_samples, size) + _overview_rows(overview_samples, size) + _cli_rows(cli, size)
    rows.append(Row(
        case=f"index entries after {size} runs expired (trimmed)",
        envflow=f"{after.items:,} entries, {stats.size(after.bytes)}",
        baselines=[f"before the fill {before.items:,} entries, {stats.size(before.bytes)}",
                   f"filled {filled.items:,} entries, {stats.size(filled.bytes)}"],
        ratios=[f"{trimmed:,} removed in {passes} trim passes, {trim_seconds:.1f}s"],
        target="back to the start",
        met=after.items == before.items and after.bytes <= before.bytes * 1.1,
    ))
    notes = [f"scale: {size} runs filled by pipeline in {fill_seconds:.0f}s"
             + (" (--quick: 20,000, not 1,000,000)" if ctx.quick else "")
             + f"; queries timed {ctx.sizes.scale_rounds}x per size, alternating databases; index bytes are "
             "MEMORY USAGE of every index key (the trim rebuilds an index that shrank far below its table's size)"]
    return Result(rows, notes, {"queries": query_samples, "overview": overview_samples, "cli": cli,
                                "fill_seconds": fill_seconds})


def _time_queries(clients: dict[str, redis.Redis], rounds: int) -> dict[str, dict[str, list[float]]]:
    queries = {size: Queries(client) for size, client in clients.items()}
    samples: dict[str, dict[str, list[float]]] = {name: {"100": [], "large": []} for name in QUERIES}
    for i in range(rounds + 2):
        for name, args in QUERIES.items():
            for size, q in queries.items():
                t0 = time.perf_counter()
                page = q.runs(limit=20, **args)  # type: ignore[arg-type]
                elapsed = time.perf_counter() - t0
                if len(page.runs) != 20:
                    raise RuntimeError(f"scale: {name} at {size} listed {len(page.runs)} runs, not 20")
                if i >= 2:
                    samples[name][size].append(elapsed)
    return samples


def _time_overview(h, urls: dict[str, str], rounds: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    from envflow.client import Client
    from envflow.ui import overview

    clients = {size: Client(settings=h.settings(redis_url=url)) for size, url in urls.items()}
    samples: dict[str, list[float]] = {size: [] for size in clients}
    for i in range(rounds + 2):
        for size, client in clients.items():
            t0 = time.perf_counter()
            view = overview.read(client)
            elapsed = time.perf_counter() - t0
            if not sum(view.windows["7d"].values()):
                raise RuntimeError(f"scale: the overview at {size} counted no runs")
            if i >= 2:
                samples[size].append(elapsed)
    return samples


def _overview_rows(samples: dict[str, list[float]], size: str) -> list[Row]:
    small, large = samples["100"], samples["large"]
    p50 = statistics.median(large) / statistics.median(small)
    p95 = stats.percentile(large, 95) / stats.percentile(small, 95)
    return [Row(
        case=f"web UI overview at {size} runs",
        envflow=f"p50 {stats.ms(statistics.median(large))}, p95 {stats.ms(stats.percentile(large, 95))}",
        baselines=[f"at 100 runs p50 {stats.ms(statistics.median(small))}, p95 {stats.ms(stats.percentile(small, 95))}"],
        ratios=[f"{p50:.2f}x p50, {p95:.2f}x p95 at 100"],
        target=f"<= {RATIO_TARGET}x at 100",
        met=p50 <= RATIO_TARGET,
    )]


def _query_rows(samples: dict[str, dict[str, list[float]]], size: str) -> list[Row]:
    rows = []
    for name, by_size in samples.items():
        small, large = statistics.median(by_size["100"]), statistics.median(by_size["large"])
        rows.append(Row(
            case=f"run listing ({name}, 20 rows) at {size} runs",
            envflow=f"p50 {stats.ms(large)}",
            baselines=[f"at 100 runs p50 {stats.ms(small)}"],
            ratios=[f"{large / small:.2f}x at 100"],
            target=f"<= {RATIO_TARGET}x at 100",
            met=large / small <= RATIO_TARGET,
        ))
    return rows


def _cli_rows(samples: dict[str, list[float]], size: str) -> list[Row]:
    base, small, large = (statistics.median(samples[k]) for k in ("baseline", "100", "large"))
    return [Row(
        case=f"envflow run ls --limit 20 at {size} runs",
        envflow=f"p50 {stats.ms(large)}",
        baselines=[f"at 100 runs p50 {stats.ms(small)}", f"{BASELINE} p50 {stats.ms(base)}"],
        ratios=[f"{large / small:.2f}x at 100", f"{large / base:.2f}x baseline"],
        target=f"<= {RATIO_TARGET}x at 100, <= {CLI_TARGET}x baseline",
        met=large / small <= RATIO_TARGET and large / base <= CLI_TARGET,
    )]


def _expire_and_trim(h, client: redis.Redis, ids: list[str]) -> tuple[int, int, float]:  # type: ignore[no-untyped-def]
    """Expire the filled runs' records, then trim as the reaper would a run ttl later, until nothing is left."""
    from envflow.store import keys

    for start in range(0, len(ids), 10_000):
        with client.pipeline(transaction=False) as pipe:
            for run_id in ids[start:start + 10_000]:
                pipe.pexpire(keys.run(run_id), 1)
            pipe.execute()
    time.sleep(0.01)
    settings = h.settings(redis_url=h.db_url(LARGE_DB))
    maintenance = Reaper(client, settings).indexes
    removed = passes = 0
    started = time.monotonic()
    while passes < 10_000:
        passes += 1
        gone = maintenance.trim(now=time.time() + settings.run_ttl)
        removed += gone
        if not gone:
            break
    return removed, passes, time.monotonic() - started
