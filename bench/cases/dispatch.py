"""Dispatch latency (enqueue -> first output line at the caller) and end-to-end time of a trivial run.

Per sample, with every worker idle and waiting, in turn:

- envflow: ``Client.run(...)`` then ``follow()`` until the first line (dispatch), and, on
  another run, ``Client.run(...).wait()`` (end to end);
- the floor: ``Popen([venv python, -u, hello.py])``: time to its first line, and to its exit;
- raw RQ (default forking ``Worker`` and ``SimpleWorker``): enqueue a job that runs the same
  subprocess, then ``job.latest_result(timeout)`` (a blocking XREAD): the job's output is
  known only with its result, so the same sample is its dispatch and its end-to-end time.

Each raw-RQ worker class serves its own queue, so all five measurements interleave sample
by sample and background load favours none of them.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from rq import Queue
from rq.results import Result as RQResult

from envflow.models import RunState

from .. import stats
from ..harness import rq_queue
from ..report import Row
from ..rqjobs import spawn_flow
from . import Context, Result

WARMUP = 3
TIMEOUT = 30


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers(envflow=1, rq_default=1, rq_simple=1)
    name = h.deploy("hello")
    client = h.client
    python, floor_file = h.venv_python, str(h.files.floor_path("hello"))
    queues = {kind: Queue(rq_queue(kind), connection=h.redis) for kind in ("default", "simple")}
    breakdown: dict[str, list[float]] = {"enqueue_to_claim": [], "claim_to_first_line": [], "first_line_to_end": []}

    def envflow_follow() -> float:
        t0 = time.perf_counter()
        flow_run = client.run(name)
        lines = flow_run.follow(timeout=TIMEOUT)
        first = next(lines, None)
        t1 = time.perf_counter()
        wall_first = time.time()
        rest = list(lines)
        if first is None or first.text != "hello world" or rest:
            raise RuntimeError(f"envflow run {flow_run.id}: unexpected output {first!r} {rest!r}")
        record = flow_run.record()
        marks = {state: ts for state, ts, _ in record.transitions}
        breakdown["enqueue_to_claim"].append(marks["RUNNING"] - marks["PENDING"])
        breakdown["claim_to_first_line"].append(wall_first - marks["RUNNING"])
        breakdown["first_line_to_end"].append(marks[record.state.value] - wall_first)
        return t1 - t0

    def envflow_wait() -> float:
        t0 = time.perf_counter()
        flow_run = client.run(name)
        state = flow_run.wait(TIMEOUT)
        t1 = time.perf_counter()
        if state is not RunState.COMPLETED:
            raise RuntimeError(f"envflow run {flow_run.id} ended {state.value}")
        return t1 - t0

    def floor() -> tuple[float, float]:
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, "-u", floor_file], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        t1 = time.perf_counter()
        proc.stdout.read()
        proc.wait(TIMEOUT)
        t2 = time.perf_counter()
        proc.stdout.close()
        if line != b"hello world\n" or proc.returncode != 0:
            raise RuntimeError(f"floor run printed {line!r}, exit {proc.returncode}")
        return t1 - t0, t2 - t0

    def raw_rq(kind: str) -> float:
        t0 = time.perf_counter()
        job = queues[kind].enqueue(spawn_flow, python, floor_file)
        result = job.latest_result(timeout=TIMEOUT)
        t1 = time.perf_counter()
        if result is None or result.type != RQResult.Type.SUCCESSFUL or result.return_value != "hello world\n":
            raise RuntimeError(f"raw RQ job {job.id}: {result and result.type} {result and result.exc_string}")
        return t1 - t0

    samples: dict[str, list[float]] = {
        k: [] for k in ("envflow_first_line", "envflow_end", "floor_first_line", "floor_end", "rq_default", "rq_simple")
    }

    def floor_step() -> None:
        first, end = floor()
        samples["floor_first_line"].append(first)
        samples["floor_end"].append(end)

    def add(key: str, fn: Callable[[], float]) -> Callable[[], None]:
        return lambda: samples[key].append(fn())

    steps = [
        add("envflow_first_line", envflow_follow),
        add("envflow_end", envflow_wait),
        floor_step,
        add("rq_default", lambda: raw_rq("default")),
        add("rq_simple", lambda: raw_rq("simple")),
    ]
    for i in range(WARMUP + ctx.sizes.dispatch_samples):
        for fn in steps:
            h.wait_idle()
            fn()
        if i == WARMUP - 1:
            for values in (*samples.values(), *breakdown.values()):
                values.clear()
    result = _result(samples, breakdown)
    ctx.shared["dispatch"] = result.raw["summary"]
    return result


def _result(samples: dict[str, list[float]], breakdown: dict[str, list[float]]) -> Result:
    s = {k: stats.summary(v) for k, v in samples.items()}
    rows = []
    for metric, envflow_key, floor_key, label, targets in (
        ("dispatch", "envflow_first_line", "floor_first_line", "enqueue → first line", {"p50": 0.003, "p99": 0.010}),
        ("end-to-end", "envflow_end", "floor_end", "enqueue → final state", {}),
    ):
        for p in ("p50", "p95", "p99"):
            ef, fl = s[envflow_key][p], s[floor_key][p]
            rq_d, rq_s = s["rq_default"][p], s["rq_simple"][p]
            limit = targets.get(p)
            rows.append(
                Row(
                    case=f"{metric} {p} ({label})",
                    envflow=stats.ms(ef),
                    baselines=[
                        f"floor {stats.ms(fl)}",
                        f"raw RQ Worker {stats.ms(rq_d)}",
                        f"raw RQ SimpleWorker {stats.ms(rq_s)}",
                    ],
                    ratios=[
                        f"floor {stats.delta_ms(ef - fl)} ({stats.ratio(ef, fl):.2f}×)",
                        f"{stats.ratio(ef, rq_d):.2f}× RQ Worker",
                        f"{stats.ratio(ef, rq_s):.2f}× RQ SimpleWorker",
                    ],
                    target=f"≤ {limit * 1000:.0f} ms" if limit is not None else "—",
                    met=(ef <= limit) if limit is not None else None,
                )
            )
    parts = {k: stats.percentile(v, 50) for k, v in breakdown.items()}
    notes = [
        "dispatch/end-to-end: floor = the venv's interpreter run directly on the same flow file "
        "(subprocess, no Redis); raw RQ = a job running that subprocess, its output known when the "
        "result is read back (so its dispatch and end-to-end samples are the same); "
        f"n = {s['envflow_first_line']['n']} samples each, after {WARMUP} warm-up runs, worker idle.",
        "dispatch breakdown (p50, from the run record's transition times): "
        + ", ".join(f"{k.replace('_', ' ')} {stats.ms(v)}" for k, v in parts.items()),
    ]
    return Result(rows, notes, {"samples": samples, "summary": s, "breakdown": breakdown})
