"""Streaming: a flow printing 1,000,000 short lines, received by a live and by a late follower.

- live: the caller starts the run and iterates ``follow()`` at once; lines/s = N / (enqueue ->
  last line received), checking every line arrives once, in order;
- replay: after the run ended, a new ``follow()`` replays the whole history from Redis;
- the floor: the same flow file run by hand, its stdout piped into a reader process that
  counts lines (``bench/pipe_reader.py``), no Redis: once with ``-u`` (how the worker runs
  flows, so each line leaves the flow as it is printed) and once block-buffered (how
  ``python flow.py | reader`` runs by default; it cannot stream live).

The worker's RSS is sampled throughout the live run, for the memory case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from envflow.models import RunState

from .. import stats
from ..procs import RssSampler, rss_bytes
from ..report import Row
from . import Context, Result

READER = Path(__file__).resolve().parent.parent / "pipe_reader.py"
TARGET = 0.5


def pipe_floor(python: str, flow_file: str, n: int, unbuffered: bool) -> float:
    """Seconds for ``python [-u] flow_file n | reader`` to deliver all ``n`` lines."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    try:
        reader = subprocess.Popen([sys.executable, str(READER)], stdin=r, stdout=subprocess.PIPE)
        flow = subprocess.Popen(
            [python, *(["-u"] if unbuffered else []), flow_file, str(n)], stdin=subprocess.DEVNULL, stdout=w
        )
    finally:
        os.close(r)
        os.close(w)
    out, _ = reader.communicate(timeout=600)
    t1 = time.perf_counter()
    flow.wait(60)
    if int(out) != n or flow.returncode != 0:
        raise RuntimeError(f"pipe floor: {out!r} lines of {n}, flow exit {flow.returncode}")
    return t1 - t0


def follow_all(flow_run, n: int, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds from now until ``follow()`` has yielded all ``n`` lines, each once, in order."""
    t0 = time.perf_counter()
    count = 0
    for line in flow_run.follow(timeout=timeout):
        if line.seq != count:
            raise RuntimeError(f"run {flow_run.id}: line {line.seq} arrived when {count} was due")
        count += 1
    elapsed = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"run {flow_run.id}: {count} of {n} lines arrived")
    return elapsed


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers(envflow=1)
    n, repeats = ctx.sizes.stream_lines, ctx.sizes.stream_repeats
    timeout = 60 + n / 5000
    name = h.deploy("lines")
    client = h.client
    worker = h.envflow_workers[0]

    warm = client.run(name, {"n": 1000})
    if warm.wait(60) is not RunState.COMPLETED:
        raise RuntimeError(f"warm-up run {warm.id} failed")
    h.wait_idle(settle=0.2)
    idle_rss = rss_bytes(worker.pid)
    redis_log_before = h.redis_log_count("output buffer limits")
    python, floor_file = h.venv_python, str(h.files.floor_path("lines"))

    # The configurations take turns, repeat by repeat, so load from elsewhere hits them alike.
    lives: list[float] = []
    replays: list[float] = []
    floor_u: list[float] = []
    floor_b: list[float] = []
    run_ids: list[str] = []
    samples: list[tuple[float, int]] = []
    after_rss = None
    for _ in range(repeats):
        h.wait_idle(settle=0.1)
        with RssSampler(worker.pid) as sampler:
            t0 = time.perf_counter()
            flow_run = client.run(name, {"n": n})
            follow_all(flow_run, n, timeout)
            lives.append(time.perf_counter() - t0)
            state = flow_run.wait(timeout)
        if state is not RunState.COMPLETED:
            raise RuntimeError(f"run {flow_run.id} ended {state.value}")
        if not run_ids:
            samples = sampler.samples
            h.wait_idle(settle=0.2)
            after_rss = rss_bytes(worker.pid)
        run_ids.append(flow_run.id)
        replays.append(follow_all(client.get_run(flow_run.id), n, timeout))
        floor_u.append(pipe_floor(python, floor_file, n, unbuffered=True))
        floor_b.append(pipe_floor(python, floor_file, n, unbuffered=False))
    disconnects = h.redis_log_count("output buffer limits") - redis_log_before

    ctx.shared["streaming"] = {
        "run_id": run_ids[0],
        "lines": n,
        "worker_pid": worker.pid,
        "idle_rss": idle_rss,
        "after_rss": after_rss,
        "rss_samples": samples,
    }
    live_rate = n / stats.percentile(lives, 50)
    replay_rate = n / stats.percentile(replays, 50)
    fu, fb = n / stats.percentile(floor_u, 50), n / stats.percentile(floor_b, 50)
    baselines = [f"pipe floor (-u) {stats.rate(fu, 'lines')}", f"pipe, block-buffered {stats.rate(fb, 'lines')}"]
    rows = []
    for label, value in (("live follower", live_rate), ("late follower (replay)", replay_rate)):
        r = stats.ratio(value, fu)
        rows.append(
            Row(
                case=f"streaming {n:,} lines: {label}",
                envflow=stats.rate(value, "lines"),
                baselines=baselines,
                ratios=[f"{r:.2f}× pipe floor (-u)", f"{stats.ratio(value, fb):.2f}× block-buffered"],
                target=f"≥ {TARGET}× pipe floor",
                met=r >= TARGET,
            )
        )
    notes = [
        f"streaming: live = enqueue → last line at a follower started with the run; every figure is the median "
        f"of {repeats} turn(s) (live, replay, floor -u, floor buffered); "
        f"Redis dropped the live subscriber {disconnects} time(s) for its output buffer (the follower "
        "then fills the gap from the history)."
    ]
    raw = {
        "lines": n,
        "live_seconds": lives,
        "replay_seconds": replays,
        "floor_unbuffered_seconds": floor_u,
        "floor_buffered_seconds": floor_b,
        "subscriber_disconnects": disconnects,
    }
    return Result(rows, notes, raw)
