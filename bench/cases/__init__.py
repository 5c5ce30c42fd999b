"""The benchmark cases, in the order a full run runs them.

Each case module has ``run(ctx) -> Result``: it measures envflow and its baselines in
the same run and returns table rows, notes and its raw samples.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..harness import Harness
from ..report import Row


@dataclass(frozen=True)
class Sizes:
    """How much each case measures: the full run's sizes follow the issue; quick ones fit CI's minute."""

    dispatch_samples: int
    throughput_runs: int
    throughput_rounds: int  # batches per configuration, taking turns with the other configurations
    stream_lines: int
    stream_repeats: int  # floors and replays are repeated, the median kept
    latency_lines: int
    activation_cached: int
    activation_uncached: int
    peer_samples: int
    peer_runs: int
    built_samples: int  # later runs of a built env, and of the same flow in a mounted venv
    built_pip_runs: int  # runs that install into a fresh venv at their start
    built_cold_builds: int  # cold builds, uv and pip each
    cli_rounds: int  # CLI start-up: runs of each command, interleaved with the baseline
    scale_runs: int  # runs filled in for the listing case (beside 100)
    scale_rounds: int  # listing queries timed per size


FULL = Sizes(
    dispatch_samples=200,
    throughput_runs=1000,
    throughput_rounds=5,
    stream_lines=1_000_000,
    stream_repeats=3,
    latency_lines=1000,
    activation_cached=5000,
    activation_uncached=30,
    peer_samples=20,
    peer_runs=20,
    built_samples=100,
    built_pip_runs=8,
    built_cold_builds=3,
    cli_rounds=30,
    scale_runs=1_000_000,
    scale_rounds=30,
)
QUICK = Sizes(
    dispatch_samples=12,
    throughput_runs=60,
    throughput_rounds=2,
    stream_lines=100_000,
    stream_repeats=1,
    latency_lines=100,
    activation_cached=500,
    activation_uncached=5,
    peer_samples=3,
    peer_runs=3,
    built_samples=10,
    built_pip_runs=1,
    built_cold_builds=1,
    cli_rounds=12,
    scale_runs=20_000,
    scale_rounds=8,
)


@dataclass
class Context:
    harness: Harness
    sizes: Sizes
    quick: bool
    log: Callable[[str], None]
    shared: dict[str, Any] = field(default_factory=dict)  # figures one case leaves for another


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


NAMES = ("activation", "dispatch", "latency", "streaming", "memory", "throughput", "warm", "built", "ui", "cli",
         "scale", "routing", "sandbox", "sequential", "hooks", "limits", "replication")


def load(name: str) -> Callable[[Context], Result]:
    """The ``run`` function of the case module ``name``."""
    return importlib.import_module(f"{__name__}.{name}").run  # type: ignore[no-any-return]
