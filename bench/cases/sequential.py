"""Sequential runs, the published scenario: each run submitted when the previous one ended.

Windmill's benchmark runs 40 light tasks of about 10 ms of CPU one after another on one worker
per engine (Hatchet 1.2 s, Windmill 2.1 s, Temporal 3.0 s, Prefect 2 4.9 s, Airflow 116 s on an
AWS m4.large). Here, in one sitting, the same shape with a flow that spins the CPU for 10 ms
(and 10 runs of 1.5 s), through the path users call: ``Client.run(...).wait()`` with one worker.
Beside it, in the same run:

- the floor: the same flow file run as a script by the venv's interpreter, 40 times in a row
  (``subprocess.run``): what running the work with nothing around it costs;
- raw RQ's ``SimpleWorker`` running that same subprocess as its job (enqueue, then the result).

Per-run overhead is the total less the flow's own CPU time, divided by the runs.
"""

from __future__ import annotations

import subprocess
import time

from rq import Queue

from envflow.models import RunState

from .. import stats
from ..harness import rq_queue
from ..report import Row
from ..rqjobs import spawn_flow
from . import Context, Result

SCENARIOS = ((40, 10.0), (10, 1500.0))  # (runs, CPU ms per run)
QUICK_SCENARIOS = ((10, 10.0), (2, 1500.0))
TIMEOUT = 60
TARGET = 0.5  # envflow's total against the floor's, for the light tasks


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers(envflow=1, rq_simple=1)
    name = h.deploy("busy")
    client = h.client
    python, script = h.venv_python, str(h.files.floor_path("busy"))
    simple = Queue(rq_queue("simple"), connection=h.redis)
    for _ in range(3):  # warm up: the env's ready process, the worker's caches, RQ's import of the job
        client.run(name, {"ms": 1}).wait(TIMEOUT)
        simple.enqueue(spawn_flow, python, script).latest_result(timeout=TIMEOUT)

    def envflow_total(runs: int, ms: float) -> float:
        t0 = time.perf_counter()
        for _ in range(runs):
            state = client.run(name, {"ms": ms}).wait(TIMEOUT)
            if state is not RunState.COMPLETED:
                raise RuntimeError(f"sequential: a run ended {state.value}")
        return time.perf_counter() - t0

    def floor_total(runs: int, ms: float) -> float:
        t0 = time.perf_counter()
        for _ in range(runs):
            subprocess.run([python, "-u", script, str(ms)], check=True, capture_output=True, timeout=TIMEOUT)
        return time.perf_counter() - t0

    def rq_total(runs: int, ms: float) -> float:
        t0 = time.perf_counter()
        for _ in range(runs):
            job = simple.enqueue(spawn_flow, python, script)
            if job.latest_result(timeout=TIMEOUT) is None:
                raise RuntimeError("sequential: a raw RQ job gave no result")
        return time.perf_counter() - t0

    rows, samples = [], {}
    for runs, ms in (QUICK_SCENARIOS if ctx.quick else SCENARIOS):
        # Taking turns, so background load favours none of them.
        got = {"envflow": envflow_total(runs, ms), "floor": floor_total(runs, ms),
               "rq": rq_total(runs, ms) if ms < 100 else None}
        samples[f"{runs}x{ms:g}ms"] = got
        work = runs * ms / 1000
        overhead = (got["envflow"] - work) / runs
        ratio = got["envflow"] / got["floor"]
        baselines = [f"floor (the script {runs}x) {got['floor']:.2f}s, {stats.ms((got['floor'] - work) / runs)}/run"]
        ratios = [f"{ratio:.2f}x floor"]
        if got["rq"] is not None:
            baselines.append(f"raw RQ SimpleWorker {got['rq']:.2f}s")
            ratios.append(f"{got['envflow'] / got['rq']:.2f}x RQ")
        light = ms < 100
        rows.append(Row(
            case=f"{runs} sequential runs of a {ms:g} ms CPU flow, Client.run().wait()",
            envflow=f"{got['envflow']:.2f}s, overhead {stats.ms(overhead)}/run",
            baselines=baselines,
            ratios=ratios,
            target=f"<= {TARGET}x floor" if light else "report",
            met=ratio <= TARGET if light else None,
        ))
    notes = ["sequential: one envflow worker (warm pool on), one raw RQ SimpleWorker; each run submitted when the "
             "previous one ended; overhead = (total - runs x CPU ms) / runs. The published anchors (Windmill's "
             "benchmark, 40 x ~10 ms on an AWS m4.large): Hatchet 1.22 s, Windmill 2.09 s, Temporal 2.97 s, "
             "Prefect 2 4.87 s. `--peers` measures Prefect on this machine."]
    return Result(rows, notes, samples)
