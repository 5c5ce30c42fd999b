"""Wall time of whole CLI processes, interleaved with their baseline in the same sitting.

The baseline is the same interpreter importing what every command that talks to Redis needs
at least: ``python -c "import click, redis"``. Commands and baseline take turns, round after
round, so background load favours none of them; the median of each is compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

BASELINE = "python -c 'import click, redis'"


def envflow_argv() -> list[str]:
    """The installed ``envflow`` command (the console script beside this interpreter), as users run it."""
    script = Path(sys.executable).parent / "envflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envflow"]


def baseline_argv() -> list[str]:
    return [sys.executable, "-c", "import click, redis"]


def run_once(argv: Sequence[str], env: Mapping[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(list(argv), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def interleaved(commands: Mapping[str, tuple[Sequence[str], Mapping[str, str]]], rounds: int,
                warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per run of each command, ``rounds`` times each, taking turns (after ``warmup`` untimed rounds)."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(warmup + rounds):
        for name, (argv, env) in commands.items():
            elapsed = run_once(argv, env)
            if i >= warmup:
                samples[name].append(elapsed)
    return samples


def environ(url: str) -> dict[str, str]:
    """The benchmark's environment, pointed at ``url``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ENVFLOW_")}, "ENVFLOW_REDIS_URL": url}
