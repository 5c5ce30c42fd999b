"""``--peers``: the same hello flow on the peer workflow tool (Prefect), measured the same way.

The tool's current release is installed from PyPI into a throwaway venv under the cache
directory (never into envflow's dependencies). The case starts its server on a free
loopback port (SQLite under the run's directory, no UI, no analytics), registers a
``process`` work pool and a deployment of the hello flow, starts its workers (``prefect
worker start --limit 1``: one run at a time, like one envflow worker) and drives it with
``bench/peers/prefect_driver.py`` inside that venv. Workers poll every second
(``PREFECT_WORKER_QUERY_SECONDS=1``; the default is 10).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .. import stats
from ..cases import Context, Result
from ..harness import base_environ, free_port
from ..procs import Child
from ..report import Row

DRIVER = Path(__file__).resolve().parent / "prefect_driver.py"
FLOW = '''from prefect import flow


@flow(log_prints=True)
def hello(name="world"):
    print(f"hello {name}")
'''
QUERY_SECONDS = "1"


def install(venv: Path) -> str:
    """Make (or refresh) the throwaway venv with the current release; its version."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", "prefect"],
        capture_output=True, timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install prefect failed: {done.stderr.decode(errors='replace')[-2000:]}")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import prefect; print(prefect.__version__)"],
                         capture_output=True, check=True, timeout=120)
    return out.stdout.decode().strip()


def run(ctx: Context) -> Result:
    h = ctx.harness
    venv = h.cache_dir / "peers" / "prefect"
    ctx.log(f"peers: installing the current prefect release into {venv} ...")
    version = install(venv)
    home = h.root / "prefect"
    flow_dir = home / "flow"
    flow_dir.mkdir(parents=True, exist_ok=True)
    (flow_dir / "hello_prefect.py").write_text(FLOW)
    port = free_port()
    env = {
        **{k: v for k, v in base_environ().items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home / "home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": QUERY_SECONDS,
    }
    prefect = str(venv / "bin" / "prefect")
    children: list[Child] = []
    try:
        t0 = time.monotonic()
        children.append(Child("prefect-server", [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                              h.logs / "prefect-server.log", env, home))
        _wait_healthy(port, children[0])
        server_start = time.monotonic() - t0
        deployment = _driver(venv, env, home, "setup", str(flow_dir))["deployment_id"]

        def worker() -> Child:
            child = Child(f"prefect-worker-{len(children)}",
                          [prefect, "worker", "start", "--pool", "bench", "--type", "process", "--limit", "1"],
                          h.logs / f"prefect-worker-{len(children)}.log", env, home)
            children.append(child)
            child.wait_for("started", 120)
            return child

        worker()
        samples = _driver(venv, env, home, "dispatch", deployment, str(ctx.sizes.peer_samples))
        n = ctx.sizes.peer_runs
        seconds = {1: _driver(venv, env, home, "throughput", deployment, str(n))["seconds"]}
        worker()
        seconds[2] = _driver(venv, env, home, "throughput", deployment, str(n))["seconds"]
    finally:
        for child in reversed(children):
            child.stop(timeout=15)
    return _result(ctx, version, server_start, samples, {k: n / v for k, v in seconds.items()}, n)


def _wait_healthy(port: int, server: Child, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"prefect server exited:\n{server.output()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"prefect server not healthy after {timeout}s")


def _driver(venv: Path, env: dict[str, str], cwd: Path, *args: str) -> dict:
    done = subprocess.run([str(venv / "bin" / "python"), str(DRIVER), *args], env=env, cwd=cwd,
                          capture_output=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"prefect driver {args[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _result(ctx: Context, version: str, server_start: float, samples: dict, rate: dict[int, float], n: int) -> Result:
    first, end = stats.summary(samples["first_line"]), stats.summary(samples["end"])
    mine_d = ctx.shared.get("dispatch")
    mine_t = ctx.shared.get("throughput")
    rows = []
    for label, peer, key in (("dispatch p50 (first line at caller)", first, "envflow_first_line"),
                             ("end-to-end p50 (final state at caller)", end, "envflow_end")):
        ef = mine_d[key]["p50"] if mine_d else None
        rows.append(Row(
            case=f"peer: {label}",
            envflow=stats.ms(ef) if ef is not None else "(run dispatch)",
            baselines=[f"prefect {version} {stats.ms(peer['p50'])}"],
            ratios=[f"envflow {peer['p50'] / ef:.0f}× faster"] if ef else [],
        ))
    for workers in (1, 2):
        ef = mine_t.get(f"envflow_{workers}") if mine_t else None
        rows.append(Row(
            case=f"peer: throughput, {workers} worker{'s' if workers > 1 else ''}",
            envflow=stats.rate(ef, "runs") if ef else "(run throughput)",
            baselines=[f"prefect {version} {stats.rate(rate[workers], 'runs')}"],
            ratios=[f"envflow {ef / rate[workers]:.0f}× faster"] if ef else [],
        ))
    notes = [
        f"peers: prefect {version} (server {server_start:.1f}s to healthy, process work pool, workers with --limit 1 "
        f"polling every {QUERY_SECONDS}s); its 'first line' is the printed line read back from the run's logs "
        f"(log_prints=True), polled every 20 ms; {samples and len(samples['end'])} dispatch samples, {n} runs per "
        "throughput figure. Prefect has no live stdout stream to the caller."
    ]
    raw = {"version": version, "server_start_seconds": server_start, "samples": samples, "throughput": rate, "runs": n}
    return Result(rows, notes, raw)
