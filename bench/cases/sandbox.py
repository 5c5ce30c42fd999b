"""What the flow sandbox costs a run: the same trivial flow on two workers in the same run, samples
interleaved, one with the sandbox on (the default) and one with ``ENVFLOW_FLOW_SANDBOX=false``.

Per sample and worker: enqueue → first line at a follower (dispatch), for warm runs (forked from a
ready process) and cold ones (``ENVFLOW_WARM_MAX=0``: a new interpreter per run); and the CPU the
worker and all its processes spent per run (user + system, children included once they are
waited for), over the whole series.
"""

from __future__ import annotations

import sys
import textwrap
import time

import psutil

from envflow.deployments import Deployment

from .. import stats
from ..harness import base_environ, make_venv
from ..procs import Child
from ..report import Row
from . import Context, Result

FLOW = """
    from envflow import flow

    @flow
    def hello(tag: str = ""):
        print("ready", tag)
"""
TIMEOUT = 60
KINDS = ("on warm", "off warm", "on cold", "off cold")


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers()
    venv = make_venv(h.root / "sandbox-venv")
    flow_file = h.root / "flows" / "sandbox_hello.py"
    flow_file.write_text(textwrap.dedent(FLOW).lstrip())
    deployments, workers = {}, {}
    for kind in KINDS:
        queue = "bench-sandbox-" + kind.replace(" ", "-")
        deployments[kind] = h.client.create_deployment(Deployment(
            name=kind.replace(" ", "-"), flow_location=str(flow_file), virtualenv=str(venv), queue=queue,
            stream_output=False)).name
        extra = {"ENVFLOW_FLOW_SANDBOX": "true" if kind.startswith("on") else "false"}
        if kind.endswith("cold"):
            extra["ENVFLOW_WARM_MAX"] = "0"
        workers[kind] = _start(h, queue, extra)
    first: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, float] = {k: 0.0 for k in KINDS}
    rounds = 5 if ctx.quick else 40
    for i in range(rounds + 2):
        for kind in KINDS:
            before = _cpu(workers[kind].pid)
            t0 = time.perf_counter()
            run = h.client.run(deployments[kind], {"tag": str(i)})
            line = next(run.follow(timeout=TIMEOUT))
            elapsed = time.perf_counter() - t0
            run.wait(TIMEOUT)
            h.wait_idle()
            if i >= 2:  # the first rounds let the warm envs get ready
                first[kind].append(elapsed)
                cpu[kind] += _cpu(workers[kind].pid) - before
            if line.text != f"ready {i}":
                raise RuntimeError(f"{kind}: unexpected output {line.text!r}")
    for worker in workers.values():
        worker.stop()
    return _result(first, {k: v / rounds for k, v in cpu.items()})


def _start(h, queue: str, extra: dict[str, str]) -> Child:  # type: ignore[no-untyped-def]
    name = f"{queue}-worker"
    child = Child(name, [sys.executable, "-m", "envflow", "worker", "start", "--queue", queue, "--name", name],
                  h.logs / f"{name}.log", {**base_environ(), **h.envflow_environ(), **extra}, h.root / "work")
    child.wait_for("ready on queue", 60)
    h.envflow_workers.append(child)
    return child


def _cpu(pid: int) -> float:
    """CPU seconds of a worker and its processes, those it (or they) waited for included."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _result(first: dict[str, list[float]], cpu: dict[str, float]) -> Result:
    s = {k: stats.summary(v) for k, v in first.items()}
    rows = []
    for start in ("warm", "cold"):
        on, off = s[f"on {start}"], s[f"off {start}"]
        rows.append(Row(
            case=f"sandbox cost, {start} trivial run: enqueue → first line p50",
            envflow=f"sandbox on {stats.ms(on['p50'])}",
            baselines=[f"off {stats.ms(off['p50'])}"],
            ratios=[f"{stats.ratio(on['p50'], off['p50']):.2f}× (on/off)"],
        ))
        rows.append(Row(
            case=f"sandbox cost, {start} trivial run: CPU per run (worker and its processes)",
            envflow=f"sandbox on {cpu[f'on {start}'] * 1000:.1f} ms",
            baselines=[f"off {cpu[f'off {start}'] * 1000:.1f} ms"],
            ratios=[f"{stats.ratio(cpu[f'on {start}'], cpu[f'off {start}']):.2f}× (on/off)"],
        ))
    notes = [f"sandbox: n = {s['on warm']['n']} samples per kind, interleaved, four workers in one run"]
    return Result(rows, notes, {"first_line": first, "cpu_per_run": cpu})
