"""Envs built from requirements: what a run pays once its env is built, and what building costs.

Five small packages, written as wheels into the run's wheelhouse (``bench/wheelhouse.py``); envflow's
workers install them offline (``ENVFLOW_PIP_FIND_LINKS``, ``ENVFLOW_PIP_NO_INDEX``). Three figures:

- reuse: enqueue -> final state of a run whose env is built already (``requirements=[...]``), against
  the same flow in a mounted venv holding the same packages; samples interleave one by one;
- per run against installing at every run start (what ``pip_packages`` does in a peer tool): a fresh
  venv, ``pip install`` of the same wheels into it, then the flow's imports in it;
- a cold build: ``EnvCache.prepare`` of a new key (``uv venv`` + ``uv pip install``, bytecode
  compiled), against ``python -m venv`` + its ``pip install`` of the same wheels (pip compiles too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from envflow.deployments import Deployment
from envflow.models import EnvKind, EnvSpec, RunState
from envflow.worker.env_cache import EnvCache

from .. import stats
from ..harness import make_venv
from ..report import Row
from ..wheelhouse import write_wheel
from . import Context, Result

PACKAGES = [f"bench-pkg-{c}" for c in "abcde"]
MODULES = [p.replace("-", "_") for p in PACKAGES]
WARMUP = 3
TIMEOUT = 60
FLOW = f"""
    from envflow import flow

    @flow
    def five_packages():
        import {", ".join(MODULES)}
        print("imported", {" + ".join(f"{m}.N" for m in MODULES)})
"""
BODY = "N = 1\n" + "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200))  # some bytecode to compile


def _wheelhouse(directory: Path) -> None:
    for name in PACKAGES:
        write_wheel(directory, name, "1.0", body=BODY)


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVFLOW_", "PIP_", "VIRTUAL_ENV"))}
    return {**env, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip_per_run(root: Path, wheels: Path, n: int, lean: bool) -> list[float]:
    """Install at every run start: a fresh venv, pip of the five wheels into it, then the flow's imports.

    :param lean: a venv without pip, installed into by this interpreter's pip (``pip --python``), the
        cheapest way to do it; else ``python -m venv`` and the new venv's own pip, the usual way.
    """
    times = []
    for i in range(n):
        fresh = root / f"per-run-{i}"
        python = str(fresh / "bin" / "python")
        venv = [sys.executable, "-m", "venv", *(["--without-pip"] if lean else []), str(fresh)]
        pip = [sys.executable, "-m", "pip", "--python", python] if lean else [python, "-m", "pip"]
        t0 = time.perf_counter()
        subprocess.run(venv, check=True, timeout=TIMEOUT * 2)
        subprocess.run([*pip, "install", "-q", "--no-index", "--find-links", str(wheels), *PACKAGES], check=True,
                       timeout=TIMEOUT * 2, env=_pip_env())
        subprocess.run([python, "-c", f"import {', '.join(MODULES)}"], check=True, timeout=TIMEOUT)
        times.append(time.perf_counter() - t0)
        shutil.rmtree(fresh, ignore_errors=True)
    return times


def _cold_builds(ctx: Context, wheels: Path, n: int) -> tuple[list[float], list[float]]:
    """Cold builds of the same env: envflow's (uv) and ``python -m venv`` + pip, taking turns."""
    h = ctx.harness
    spec = EnvSpec(kind=EnvKind.REQUIREMENTS, requirements=tuple(PACKAGES))
    uv_times, pip_times = [], []
    for i in range(n):
        cache_dir = h.root / f"cold-{i}"
        settings = h.settings(env_cache=cache_dir, pip_find_links=str(wheels), pip_no_index=True)
        t0 = time.perf_counter()
        EnvCache(settings).prepare(spec, dict(os.environ))
        uv_times.append(time.perf_counter() - t0)
        shutil.rmtree(cache_dir, ignore_errors=True)
        venv = h.root / f"pip-cold-{i}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT * 2)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheels),
                        *PACKAGES], check=True, timeout=TIMEOUT * 2, env=_pip_env())
        pip_times.append(time.perf_counter() - t0)
        shutil.rmtree(venv, ignore_errors=True)
    return uv_times, pip_times


def _deploy(ctx: Context, flow_file: Path, mounted: Path) -> tuple[str, str]:
    client = ctx.harness.client
    common = {"flow_location": str(flow_file), "flow_name": "five-packages", "stream_output": False}
    built = client.create_deployment(Deployment(name="built", requirements=PACKAGES, **common)).name
    venv = client.create_deployment(Deployment(name="mounted", virtualenv=str(mounted), **common)).name
    return built, venv


def run(ctx: Context) -> Result:
    h = ctx.harness
    _wheelhouse(h.wheelhouse)
    flow_file = h.root / "built_flows.py"
    flow_file.write_text(textwrap.dedent(FLOW))
    mounted = make_venv(h.root / "mounted-five")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(mounted / "bin" / "python"), "install", "-q",
                    "--no-index", "--find-links", str(h.wheelhouse), *PACKAGES], check=True, timeout=TIMEOUT * 2,
                   env=_pip_env())
    h.use_workers(envflow=1)
    built, venv = _deploy(ctx, flow_file, mounted)

    def one(name: str) -> float:
        h.wait_idle()
        t0 = time.perf_counter()
        state = h.client.run(name).wait(TIMEOUT)
        elapsed = time.perf_counter() - t0
        if state is not RunState.COMPLETED:
            raise RuntimeError(f"a run of {name} ended {state.value}")
        return elapsed

    first_run = one(built)  # builds the env
    samples: dict[str, list[float]] = {"built": [], "mounted": []}
    for i in range(WARMUP + ctx.sizes.built_samples):
        for key, name in (("built", built), ("mounted", venv)):
            value = one(name)
            if i >= WARMUP:
                samples[key].append(value)
    per_run = {"usual": _pip_per_run(h.root, h.wheelhouse, ctx.sizes.built_pip_runs, lean=False),
               "lean": _pip_per_run(h.root, h.wheelhouse, ctx.sizes.built_pip_runs, lean=True)}
    uv_cold, pip_cold = _cold_builds(ctx, h.wheelhouse, ctx.sizes.built_cold_builds)
    return _result(samples, per_run, uv_cold, pip_cold, first_run)


def _result(samples: dict[str, list[float]], per_run: dict[str, list[float]], uv_cold: list[float],
            pip_cold: list[float], first_run: float) -> Result:
    b, m = stats.percentile(samples["built"], 50), stats.percentile(samples["mounted"], 50)
    p, lean = stats.percentile(per_run["usual"], 50), stats.percentile(per_run["lean"], 50)
    u, q = stats.percentile(uv_cold, 50), stats.percentile(pip_cold, 50)
    rows = [
        Row(case="built env, later runs (p50, enqueue → final state)", envflow=stats.ms(b),
            baselines=[f"mounted venv {stats.ms(m)}"], ratios=[f"{stats.ratio(b, m):.3f}× mounted venv"],
            target="≤ 1.05×", met=stats.ratio(b, m) <= 1.05),
        Row(case="built env, per run vs install at run start (p50)", envflow=stats.ms(b),
            baselines=[f"python -m venv + its pip install {stats.ms(p)}",
                       f"venv without pip + pip --python {stats.ms(lean)}"],
            ratios=[f"{stats.ratio(p, b):.0f}× faster", f"{stats.ratio(lean, b):.0f}× faster"],
            target="≥ 50× faster", met=stats.ratio(p, b) >= 50),
        Row(case="built env, first build (uv, 5 packages)", envflow=stats.ms(u),
            baselines=[f"python -m venv + pip install {stats.ms(q)}"], ratios=[f"{stats.ratio(q, u):.1f}× faster"]),
    ]
    notes = [
        f"built envs: 5 small wheels (200 functions each) from a local wheelhouse, offline; later runs "
        f"n = {len(samples['built'])} each, interleaved with the mounted venv, after {WARMUP} warm-up runs; "
        f"install-at-run-start n = {len(per_run['usual'])} each way (the target is read against the usual "
        f"way; the lean one skips pip's own install into the venv); cold builds n = {len(uv_cold)} each, bytecode compiled by "
        f"both; the first run of the built deployment (its build included) took {stats.ms(first_run)} end to end."
    ]
    raw = {"samples": samples, "per_run_install": per_run, "uv_cold": uv_cold, "pip_cold": pip_cold,
           "first_run": first_run}
    return Result(rows, notes, raw)
