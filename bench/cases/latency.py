"""Line latency: a flow printing 100 timestamped lines a second, print -> follower.

envflow: the ``ticker`` flow prints ``"<i> <time.time()>"`` at 100 lines/s; the caller
follows the run and subtracts each line's timestamp from its own clock on arrival (same
machine, same clock). Baseline: the same messages published bare on a Redis channel by
another process (``bench/publisher.py``) and received by a plain subscriber: one pub/sub
round trip, the least any Redis-carried line can take. The first lines of each are
dropped as warm-up.
"""

from __future__ import annotations

import subprocess
import sys
import time

from .. import stats
from ..harness import REPO, base_environ
from ..report import Row
from . import Context, Result

RATE = 100.0
SKIP = 5  # warm-up lines
TARGET_P99 = 0.005


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers(envflow=1)
    n = ctx.sizes.latency_lines
    name = h.deploy("ticker")
    client = h.client
    h.wait_idle()

    envflow: list[float] = []
    flow_run = client.run(name, {"n": n, "rate": RATE})
    for line in flow_run.follow(timeout=n / RATE + 60):
        received = time.time()
        envflow.append(received - float(line.text.split()[1]))
    if len(envflow) != n:
        raise RuntimeError(f"run {flow_run.id}: {len(envflow)} of {n} lines arrived")

    bare = _bare_pubsub(h.url, h.redis, n)
    e, b = envflow[SKIP:], bare[SKIP:]
    rows = []
    for p in (50, 99):
        ef, bb = stats.percentile(e, p), stats.percentile(b, p)
        rows.append(
            Row(
                case=f"line latency p{p} (print → follower, {RATE:.0f} lines/s)",
                envflow=stats.ms(ef),
                baselines=[f"bare pub/sub round trip {stats.ms(bb)}"],
                ratios=[f"{stats.delta_ms(ef - bb)} ({stats.ratio(ef, bb):.1f}×)"],
                target=f"≤ {TARGET_P99 * 1000:.0f} ms" if p == 99 else "—",
                met=(ef <= TARGET_P99) if p == 99 else None,
            )
        )
    notes = [f"line latency: {len(e)} lines each (first {SKIP} dropped); max envflow {stats.ms(max(e))}, bare {stats.ms(max(b))}."]
    return Result(rows, notes, {"envflow": envflow, "bare_pubsub": bare, "summary": {"envflow": stats.summary(e), "bare": stats.summary(b)}})


def _bare_pubsub(url: str, redis, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    channel = "bench:bare-latency"
    pubsub = redis.pubsub()
    pubsub.subscribe(channel)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message and message["type"] == "subscribe":
            break
    publisher = subprocess.Popen(
        [sys.executable, "-m", "bench.publisher", url, channel, str(n), str(RATE)], cwd=REPO, env=base_environ()
    )
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + n / RATE + 30
        while len(latencies) < n and time.monotonic() < deadline:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            received = time.time()
            latencies.append(received - float(message["data"].split()[1]))
    finally:
        pubsub.close()
        try:
            publisher.wait(10)
        except subprocess.TimeoutExpired:
            publisher.kill()
            publisher.wait()
    if len(latencies) != n:
        raise RuntimeError(f"bare pub/sub: {len(latencies)} of {n} messages arrived")
    return latencies
