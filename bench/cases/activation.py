"""Activation: the per-run cost of ``EnvCache.prepare`` for a conda-layout env, cached and uncached.

The env is built in conda's on-disk layout: ``bin/python`` (a link to a real interpreter),
``conda-meta/history``, ``conda-meta/state`` with config vars, and one
``etc/conda/activate.d`` script. Measured in this process, as the worker calls it:

- cached: ``prepare`` on a warm cache (the fingerprint check and building the run's variables);
- uncached: ``prepare`` after ``forget`` (resolve, check, and source the activate.d script in ``sh``);
- the baseline: launching the env's bare interpreter (``bin/python -c pass``), what every run pays anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from envflow.models import EnvSpec
from envflow.worker.env_cache import EnvCache

from .. import stats
from ..report import Row
from . import Context, Result


def make_conda_prefix(prefix: Path) -> Path:
    """A conda env in conda's on-disk layout, with config vars and one activate.d script."""
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    (prefix / "conda-meta").mkdir(exist_ok=True)
    activate_d = prefix / "etc" / "conda" / "activate.d"
    activate_d.mkdir(parents=True, exist_ok=True)
    python = prefix / "bin" / "python"
    if not python.is_symlink():
        python.symlink_to(os.path.realpath(sys.executable))
    (prefix / "conda-meta" / "history").write_text("==> 2026-01-01 00:00:00 <==\n# cmd: conda create -p bench\n")
    state = {"env_vars": {"BENCH_HOME": str(prefix / "home"), "BENCH_MODE": "bench"}}
    (prefix / "conda-meta" / "state").write_text(json.dumps(state))
    (activate_d / "one.sh").write_text('export BENCH_ACTIVATED=1\nexport PATH="$CONDA_PREFIX/extra:$PATH"\n')
    return prefix


def run(ctx: Context) -> Result:
    h = ctx.harness
    prefix = make_conda_prefix(h.root / "conda-env")
    cache = EnvCache(h.settings())
    spec = EnvSpec.from_fields(condaenv=str(prefix))
    base = dict(os.environ)

    first = cache.prepare(spec, base)
    if first.variables.get("BENCH_ACTIVATED") != "1" or first.variables.get("BENCH_MODE") != "bench":
        raise RuntimeError(f"activation did not apply the env's script and config vars: {first.delta}")

    cached: list[float] = []
    for _ in range(ctx.sizes.activation_cached):
        t0 = time.perf_counter()
        cache.prepare(spec, base)
        cached.append(time.perf_counter() - t0)
    misses_before = cache.misses

    uncached: list[float] = []
    bare: list[float] = []
    python = str(prefix / "bin" / "python")
    for _ in range(ctx.sizes.activation_uncached):
        cache.forget(spec)
        t0 = time.perf_counter()
        cache.prepare(spec, base)
        uncached.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True, timeout=30)
        bare.append(time.perf_counter() - t0)
    if misses_before != 1:
        raise RuntimeError(f"the cache missed {misses_before} times for an unchanged env")

    c, u, b = (stats.percentile(v, 50) for v in (cached, uncached, bare))
    rows = [
        Row(
            case="activation, cached (per run, p50)",
            envflow=stats.us(c),
            baselines=[f"uncached {stats.ms(u)}", f"bare interpreter launch {stats.ms(b)}"],
            ratios=[f"{stats.ratio(c, u):.4f}× uncached", f"{stats.ratio(c, b) * 100:.2f}% of a launch"],
            target="< 1 ms",
            met=c < 0.001,
        ),
        Row(
            case="activation, uncached (p50)",
            envflow=stats.ms(u),
            baselines=[f"bare interpreter launch {stats.ms(b)}"],
            ratios=[f"{stats.ratio(u, b):.2f}× a launch"],
        ),
    ]
    notes = [
        f"activation: conda-layout prefix with 2 config vars and one activate.d script; cached p99 "
        f"{stats.us(stats.percentile(cached, 99))} over {len(cached)} calls; uncached over {len(uncached)}."
    ]
    raw = {"cached": cached, "uncached": uncached, "bare_launch": bare}
    return Result(rows, notes, raw)
