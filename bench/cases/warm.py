"""Warm env pools: a flow whose import costs ~300 ms of CPU, warm with ``preload`` against cold; and
what ready processes cost in memory.

A venv of this case's own holds ``heavy_import``, a synthetic module that burns ~300 ms of CPU when
imported (no download needed). Two workers serve two queues in the same run, samples interleaved:
one with its warm pool off (``ENVFLOW_WARM_MAX=0``: every run is a new interpreter importing the
module, as every peer pays), one with the deployment's ``preload=["heavy_import"]`` kept warm
(``warm=True``). Figures: enqueue → first line at a follower (``Client.run().follow()``). A third
worker measures the other way of making a warm process: its deployment also preloads a module that
starts a thread, so forking is unsafe and its runs take the fallback, a preloaded process started
ahead of each run and used once.

Memory: the warm worker's own RSS, and the proportional set size (PSS: shared copy-on-write pages
counted once, split among the processes sharing them) of its pool, with 0 to 5 warm envs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from envflow.deployments import Deployment

from .. import stats
from ..harness import base_environ, make_venv
from ..procs import Child
from ..report import Row
from . import Context, Result

HEAVY = """
    import time
    _end = time.process_time() + 0.3
    while time.process_time() < _end:  # ~300 ms of CPU, as importing a large library costs
        sum(i * i for i in range(1000))
"""
THREADED = """
    import threading
    threading.Thread(target=threading.Event().wait, daemon=True).start()  # a preload that starts a thread
"""
FLOW = """
    from envflow import flow

    @flow
    def heavy(tag: str = ""):
        import heavy_import
        print("ready", tag)
"""
TIMEOUT = 60


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers()  # this case's own workers only
    venv = make_venv(h.root / "warm-venv")
    lib = h.root / "warm-lib"
    lib.mkdir(exist_ok=True)
    (lib / "heavy_import.py").write_text(textwrap.dedent(HEAVY))
    (lib / "threaded_import.py").write_text(textwrap.dedent(THREADED))
    next(venv.glob("lib/python3*/site-packages")).joinpath("warm-lib.pth").write_text(f"{lib}\n")
    flow_file = h.root / "flows" / "heavy.py"
    flow_file.write_text(textwrap.dedent(FLOW).lstrip())
    cold = _deploy(h, flow_file, "cold", venv, preload=[], warm=False)
    warm = _deploy(h, flow_file, "warm", venv, preload=["heavy_import"], warm=True)
    spare = _deploy(h, flow_file, "spare", venv, preload=["heavy_import", "threaded_import"], warm=True)
    workers = [_start(h, "cold", {"ENVFLOW_WARM_MAX": "0"}), _start(h, "warm", {}), _start(h, "spare", {})]
    first: dict[str, list[float]] = {"cold": [], "warm": [], "spare": []}
    rounds = 3 if ctx.quick else 15
    for i in range(rounds + 1):
        for name, deployment in (("cold", cold), ("warm", warm), ("spare", spare)):
            t0 = time.perf_counter()
            line = next(h.client.run(deployment, {"tag": str(i)}).follow(timeout=TIMEOUT))
            if i:  # the first round lets the warm env get ready
                first[name].append(time.perf_counter() - t0)
            if line.text != f"ready {i}":
                raise RuntimeError(f"{deployment}: unexpected output {line.text!r}")
            h.wait_idle()
    time.sleep(0.5)  # the fallback's next process finishes its preload
    one_env = {name: sum(_pss(p) for p in _descendants(w.pid)) for name, w in zip(("warm", "spare"), workers[1:])}
    for worker in workers:
        worker.stop()
    return _result(first, _memory(h, flow_file, venv), one_env)


def _deploy(h, flow_file, queue, venv, **fields) -> str:  # type: ignore[no-untyped-def]
    return h.client.create_deployment(Deployment(
        name=queue, flow_location=str(flow_file), virtualenv=str(venv), queue=f"bench-{queue}",
        stream_output=False, **fields)).name


def _start(h, queue: str, extra: dict[str, str]) -> Child:  # type: ignore[no-untyped-def]
    name = f"bench-warm-{queue}"
    child = Child(name, [sys.executable, "-m", "envflow", "worker", "start", "--queue", f"bench-{queue}", "--name", name],
                  h.logs / f"{name}.log", {**base_environ(), **h.envflow_environ(), **extra}, h.root / "work")
    child.wait_for("ready on queue", 60)
    h.envflow_workers.append(child)
    return child


def _memory(h, flow_file, venv) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """(warm envs, worker RSS, pool PSS) as warm envs are added one by one (each a deployment of its own)."""
    worker = _start(h, "mem", {"ENVFLOW_WARM_MAX": "8"})
    out = [(0, _rss(worker.pid), 0)]
    for n in range(1, 6):
        name = h.client.create_deployment(Deployment(
            name=f"mem{n}", flow_location=str(flow_file), virtualenv=str(venv), queue="bench-mem",
            stream_output=False, env={"WARM_ENV": str(n)})).name
        for _ in range(3):  # a run, then the pool's ready process for it
            next(h.client.run(name, {"tag": "m"}).follow(timeout=TIMEOUT))
            h.wait_idle()
        time.sleep(0.5)
        pool = _descendants(worker.pid)
        out.append((n, _rss(worker.pid), sum(_pss(p) for p in pool)))
    worker.stop()
    return out


def _descendants(pid: int) -> list[int]:
    done = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True)
    children: dict[int, list[int]] = {}
    for line in done.stdout.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _field(path: str, name: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss(pid: int) -> int:
    return _field(f"/proc/{pid}/status", "VmRSS")


def _pss(pid: int) -> int:
    return _field(f"/proc/{pid}/smaps_rollup", "Pss")


def _result(first: dict[str, list[float]], memory: list[tuple[int, int, int]], one_env: dict[str, int]) -> Result:
    cold, warm, spare = (stats.summary(first[k]) for k in ("cold", "warm", "spare"))
    rows = [Row(
        case=f"~300 ms import, enqueue → first line {p}",
        envflow=f"warm, preloaded {stats.ms(warm[p])}",
        baselines=[f"cold (new interpreter imports it) {stats.ms(cold[p])}",
                   f"fallback: preloaded process started ahead {stats.ms(spare[p])}"],
        ratios=[f"{stats.ratio(cold[p], warm[p]):.0f}× faster warm",
                f"{stats.ratio(cold[p], spare[p]):.0f}× faster by the fallback"],
        target="≥ 20× faster, p50 ≤ 15 ms" if p == "p50" else "—",
        met=(cold[p] >= 20 * warm[p] and warm[p] <= 0.015) if p == "p50" else None,
    ) for p in ("p50", "p99")]
    mib = 2 ** 20
    (_, idle_rss, _), (_, rss4, pss4), (_, rss5, pss5) = memory[0], memory[4], memory[5]
    rows.append(Row(
        case="worker memory with 4 warm envs",
        envflow=f"worker RSS {rss4 / mib:.0f} MiB + pool PSS {pss4 / mib:.0f} MiB",
        baselines=[f"no warm env: worker RSS {idle_rss / mib:.0f} MiB"],
        ratios=[f"per extra warm env: +{(pss5 - pss4 + rss5 - rss4) / mib:.1f} MiB"],
    ))
    rows.append(Row(
        case="one warm env's processes (PSS)",
        envflow=f"forked: ready parent + child forked ahead {one_env['warm'] / mib:.1f} MiB",
        baselines=[f"fallback: process started ahead {one_env['spare'] / mib:.1f} MiB"],
        ratios=[f"{stats.ratio(one_env['spare'], one_env['warm']):.2f}×"],
    ))
    notes = [
        f"warm pools: n = {cold['n']} samples each, interleaved, after one round that lets the env get ready; "
        "the pool's memory is the PSS of its processes (each env's ready parent and the child forked ahead), "
        "so pages they share are counted once: "
        + ", ".join(f"{n} env{'s' if n != 1 else ''} {pss / mib:.1f} MiB" for n, _, pss in memory),
    ]
    return Result(rows, notes, {"first_line": first, "memory": memory, "one_env": one_env})
