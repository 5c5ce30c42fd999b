"""Throughput: 1,000 trivial runs with 1 and 2 worker processes, against the spawn floor and raw RQ.

Each configuration runs its 1,000 runs as a few batches, and the configurations take turns
batch by batch (floor, envflow, raw RQ SimpleWorker, raw RQ Worker, with 1 worker, then the
same with 2 workers, then again), so load from elsewhere on the machine lands on all of
them alike, 1- and 2-worker figures included. Every batch starts from an idle
pool and is handed over at once, in one Redis transaction, so the figure is the workers'
rate and not the enqueuing client's:

- envflow: ``hello`` runs created with ``RunStore.create(..., pipeline=)`` (envflow's batch
  path, the scheduler's) in one MULTI/EXEC; done when no run is pending or active;
- the floor: the same number of back-to-back ``python -u hello.py`` spawns (output
  captured), 1 and 2 at a time;
- raw RQ: jobs running that same spawn, ``Queue.enqueue_many`` in one pipeline, on RQ's
  default forking ``Worker`` and on ``SimpleWorker``, each class on its own queue.

runs/s = all runs / the summed time from each batch's hand-over to its last run's end.
Per run, the case also records the CPU time of the workers, of the flow processes they
reaped and of redis-server, and the Redis commands executed.
"""

from __future__ import annotations

import resource
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from envflow.store import keys

from .. import stats
from ..harness import Harness, rq_queue
from ..procs import children, cpu_seconds
from ..report import Row
from ..rqjobs import spawn_flow
from . import Context, Result

POLL = 0.005
TARGET_ONE = 2.0  # runs/s against back-to-back spawns (warm pools: runs fork from a ready process)
TARGET_TWO = 1.7
KINDS = ("floor", "envflow", "rq_simple", "rq_default")


class Meter:
    """Wall time, CPU and Redis commands of one configuration, summed over its batches."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.runs = 0
        self.seconds: list[float] = []
        self.cpu: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()

    def snapshot(self, pids: list[int] | None) -> tuple[dict[str, float], dict[str, int]]:
        """CPU so far (redis-server, the workers or this process for the floor, the flows) and command calls."""
        h = self.h
        cpu = {"redis": cpu_seconds(h.redis_server.pid)[0] if h.redis_server else 0.0}
        if pids is None:
            me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu["worker"], cpu["flows"] = me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime
        else:
            cpu["worker"] = sum(cpu_seconds(p)[0] for p in pids)
            # Flows reaped by the worker, and those forked and reaped by its envs' ready processes.
            cpu["flows"] = sum(cpu_seconds(p)[1] + sum(sum(cpu_seconds(c)) for c in children(p)) for p in pids)
        return cpu, h.command_calls()

    def add(self, runs: int, elapsed: float, before: tuple[dict[str, float], dict[str, int]],
            after: tuple[dict[str, float], dict[str, int]], polls: int) -> None:
        self.runs += runs
        self.seconds.append(elapsed)
        for k, v in after[0].items():
            self.cpu[k] += v - before[0][k]
        for k, v in after[1].items():
            self.commands[k] += v - before[1].get(k, 0)
        # Less this process's own polling (2 ZCARDs per poll) and the INFO calls that count.
        self.commands["zcard"] -= 2 * polls
        self.commands["info"] -= 1

    @property
    def rate(self) -> float:
        return self.runs / sum(self.seconds) if self.seconds else 0.0

    def per_run(self) -> dict[str, object]:
        return {
            "cpu_ms": {k: round(v * 1000 / self.runs, 3) for k, v in self.cpu.items()},
            "redis_commands": {k: round(v / self.runs, 2) for k, v in self.commands.most_common() if v > 0},
        }


def run(ctx: Context) -> Result:
    h = ctx.harness
    n, rounds = ctx.sizes.throughput_runs, ctx.sizes.throughput_rounds
    batches = [n // rounds + (i < n % rounds) for i in range(rounds)]
    python, floor_file = h.venv_python, str(h.files.floor_path("hello"))
    name = h.deploy("hello")
    client = h.client
    record = client.get_deployment(name)
    meters: dict[str, Meter] = {}

    def wait_until(done: Callable[[], bool], what: str, m: int) -> int:
        limit = 60 + m * 0.5
        polls, deadline = 0, time.monotonic() + limit
        while not done():
            polls += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"throughput: {what} did not finish within {limit:g}s")
            time.sleep(POLL)
        return polls + 1

    def floor(meter: Meter, m: int, parallel: int) -> None:
        def spawns(count: int) -> None:
            for _ in range(count):
                subprocess.run([python, "-u", floor_file], capture_output=True, check=True, timeout=60)

        before = meter.snapshot(None)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            for f in [pool.submit(spawns, m // parallel + (i < m % parallel)) for i in range(parallel)]:
                f.result()
        elapsed = time.perf_counter() - t0
        meter.add(m, elapsed, before, meter.snapshot(None), polls=0)

    def envflow(meter: Meter, m: int) -> None:
        pipe = client.redis.pipeline(transaction=True)
        ids = [client.store.create(record, {}, pipeline=pipe) for _ in range(m)]
        pids = [w.pid for w in h.envflow_workers]

        def done() -> bool:
            with client.redis.pipeline(transaction=False) as p:
                p.zcard(keys.PENDING_RUNS)
                p.zcard(keys.ACTIVE_RUNS)
                return not sum(p.execute())

        before = meter.snapshot(pids)
        t0 = time.perf_counter()
        pipe.execute()
        polls = wait_until(done, f"{m} envflow runs", m)
        elapsed = time.perf_counter() - t0
        meter.add(m, elapsed, before, meter.snapshot(pids), polls)
        with client.redis.pipeline(transaction=False) as p:
            for run_id in ids:
                p.hget(keys.run(run_id), "state")
            bad = [s for s in p.execute() if s != b"COMPLETED"]
        if bad:
            raise RuntimeError(f"throughput: {len(bad)} envflow runs did not complete ({bad[:3]})")

    def raw_rq(meter: Meter, m: int, kind: str) -> None:
        queue = Queue(rq_queue(kind), connection=h.redis)
        registries = [FinishedJobRegistry(queue=queue), FailedJobRegistry(queue=queue)]
        count = lambda: sum(r.get_job_count(cleanup=False) for r in registries)  # noqa: E731
        start = count()
        pipe = h.redis.pipeline()
        queue.enqueue_many([Queue.prepare_data(spawn_flow, args=(python, floor_file)) for _ in range(m)], pipeline=pipe)
        pids = [w.pid for w in h.rq_workers[kind]]
        before = meter.snapshot(pids)
        t0 = time.perf_counter()
        pipe.execute()
        polls = wait_until(lambda: count() - start >= m, f"{m} raw RQ jobs ({kind})", m)
        elapsed = time.perf_counter() - t0
        meter.add(m, elapsed, before, meter.snapshot(pids), polls)
        if registries[1].get_job_count(cleanup=False):
            raise RuntimeError(f"throughput: raw RQ jobs failed on the {kind} worker")

    def steps(workers: int) -> dict[str, Callable[[Meter, int], None]]:
        return {
            "floor": lambda meter, m: floor(meter, m, workers),
            "envflow": envflow,
            "rq_simple": lambda meter, m: raw_rq(meter, m, "simple"),
            "rq_default": lambda meter, m: raw_rq(meter, m, "default"),
        }

    for r, m in enumerate(batches):
        for workers in (1, 2):
            # Every kind of worker of this pool size waits on its own queue; idle ones cost next to nothing.
            h.use_workers(envflow=workers, rq_default=workers, rq_simple=workers)
            for kind, step in steps(workers).items():
                meter = meters.setdefault(f"{kind}_{workers}", Meter(h))
                h.wait_idle(settle=0.1)
                step(meter, m)
        ctx.log(f"throughput after batch {r + 1}/{rounds}: " + ", ".join(f"{k} {v.rate:.1f}/s" for k, v in meters.items()))
    h.use_workers(envflow=1)
    return _result(ctx, n, rounds, meters)


def _result(ctx: Context, n: int, rounds: int, meters: dict[str, Meter]) -> Result:
    rate = {k: m.rate for k, m in meters.items()}
    ctx.shared["throughput"] = rate
    rows = []
    for workers in (1, 2):
        ef, fl = rate[f"envflow_{workers}"], rate[f"floor_{workers}"]
        rs, rd = rate[f"rq_simple_{workers}"], rate[f"rq_default_{workers}"]
        ratios = [f"{stats.ratio(ef, fl):.2f}× floor", f"{stats.ratio(ef, rd):.2f}× RQ Worker",
                  f"{stats.ratio(ef, rs):.2f}× RQ SimpleWorker"]
        if workers == 1:
            target, met = f"≥ {TARGET_ONE}× floor (1 at a time)", stats.ratio(ef, fl) >= TARGET_ONE
        else:
            scale = stats.ratio(ef, rate["envflow_1"])
            ratios.append(f"{scale:.2f}× envflow with 1 worker")
            ratios.append(f"(floor: {stats.ratio(fl, rate['floor_1']):.2f}× 1 at a time)")
            target, met = f"≥ {TARGET_TWO}× one worker", scale >= TARGET_TWO
        rows.append(
            Row(
                case=f"throughput, {n:,} trivial runs, {workers} worker{'s' if workers > 1 else ''}",
                envflow=stats.rate(ef, "runs"),
                baselines=[
                    f"floor ({workers} spawn{'s' if workers > 1 else ''} at a time) {stats.rate(fl, 'runs')}",
                    f"raw RQ Worker ×{workers} {stats.rate(rd, 'jobs')}",
                    f"raw RQ SimpleWorker ×{workers} {stats.rate(rs, 'jobs')}",
                ],
                ratios=ratios,
                target=target,
                met=met,
            )
        )

    def cpu_text(label: str) -> str:
        c = meters[label].per_run()["cpu_ms"]
        assert isinstance(c, dict)
        return f"{label.removesuffix('_1')} {c['worker']:.1f}+{c['flows']:.1f}+{c['redis']:.1f}"

    def commands(label: str) -> float:
        c = meters[label].per_run()["redis_commands"]
        assert isinstance(c, dict)
        return float(sum(c.values()))

    notes = [
        f"throughput: {n:,} runs per configuration in {rounds} batches, the 8 configurations taking turns batch "
        "by batch; each batch handed over in one transaction to an idle pool (envflow through RunStore.create("
        "pipeline=), the scheduler's batch path).",
        "throughput CPU per run, ms, 1 worker (worker process + the flow processes it reaped + redis-server; for "
        "the floor, the spawning benchmark process + its spawns): " + ", ".join(cpu_text(f"{k}_1") for k in KINDS),
        "throughput Redis commands per run, 1 worker (scripts' inner calls included): "
        + ", ".join(f"{k} {commands(f'{k}_1'):.0f}" for k in KINDS if k != "floor"),
    ]
    raw = {
        "runs": n,
        "rounds": rounds,
        "rate": rate,
        "batch_seconds": {k: m.seconds for k, m in meters.items()},
        "per_run": {k: m.per_run() for k, m in meters.items()},
    }
    return Result(rows, notes, raw)
