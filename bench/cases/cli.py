"""CLI start-up: whole ``envflow`` processes, each beside ``python -c "import click, redis"``.

The baseline is what every command that talks to Redis must import at least (redis-py imports
its asyncio client with the package, so it is the floor). Commands and baseline take turns in
the same sitting (``bench/clitime.py``), against a database holding 100 finished runs of two
deployments: ``envflow --help`` (needs no Redis client), ``envflow run ls --limit 20`` and
``envflow deployment run NAME`` (without ``--follow``: it enqueues and prints the run id).
``run ls`` at 1,000,000 runs is the ``scale`` case's.
"""

from __future__ import annotations

import statistics

import redis

from .. import stats
from ..clitime import BASELINE, baseline_argv, envflow_argv, environ, interleaved
from ..fill import Mix, fill
from ..report import Row
from . import Context, Result

DB = 3
TARGETS = {"help": 0.5, "run_ls": 1.3}


def run(ctx: Context) -> Result:
    h = ctx.harness
    url = h.db_url(DB)
    mix = Mix("cli/big", "cli/small", every=2)
    fill(h.settings(redis_url=url), 96, mix)  # + its 4 templates: 100 runs
    env = environ(url)
    envflow = envflow_argv()
    commands = {
        "baseline": (baseline_argv(), env),
        "help": ([*envflow, "--help"], env),
        "run_ls": ([*envflow, "run", "ls", "--limit", "20"], env),
        "deployment_run": ([*envflow, "deployment", "run", mix.big], env),
    }
    try:
        samples = interleaved(commands, ctx.sizes.cli_rounds)
    finally:
        redis.Redis.from_url(url).flushdb()
    base = statistics.median(samples["baseline"])
    labels = {
        "help": "envflow --help",
        "run_ls": "envflow run ls --limit 20 (100 runs)",
        "deployment_run": "envflow deployment run NAME (no --follow)",
    }
    rows = []
    for name, label in labels.items():
        value = statistics.median(samples[name])
        target = TARGETS.get(name)
        rows.append(Row(
            case=f"CLI start-up: {label}",
            envflow=f"p50 {stats.ms(value)}",
            baselines=[f"{BASELINE} p50 {stats.ms(base)}"],
            ratios=[f"{value / base:.2f}x baseline"],
            target=f"<= {target}x baseline" if target else "—",
            met=None if target is None else value / base <= target,
        ))
    notes = [f"cli: {ctx.sizes.cli_rounds} rounds, each command and the baseline in turn; {' '.join(envflow)}"]
    return Result(rows, notes, {"samples": samples})
