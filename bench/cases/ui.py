"""The web UI's live output: a browser-less SSE client of `envflow ui`, beside the CLI's follower.

- the CLI follower: ``FlowRun.follow()`` started with the run, lines/s = N / (enqueue -> last line);
- the SSE client: the same for ``GET /runs/ID/events`` of a real ``envflow ui`` process, parsing
  every event and checking that every line arrives once, in order (the baseline is the CLI's
  figure from the same run; the two take turns, repeat by repeat);
- the pages while it streams: another client requests the run's page (``GET /runs/ID``) back to
  back while the SSE client receives, and the same requests with the UI idle, just before:
  latency p50, p95 and max of each, so "the page stays responsive" is a number.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import urllib.request

from envflow.models import RunState

from .. import stats
from ..harness import base_environ, free_port
from ..procs import Child
from ..report import Row
from . import Context, Result
from .streaming import follow_all

TARGET = 0.5  # SSE rate / CLI follower rate
LINES = 100_000
IDLE_PROBES = 50


def start_ui(ctx: Context) -> tuple[Child, str]:
    h = ctx.harness
    port = free_port()
    child = Child("envflow-ui", [sys.executable, "-m", "envflow", "ui", "--port", str(port)], h.logs / "ui.log",
                  {**base_environ(), **h.envflow_environ()}, h.root / "work")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return child, base
        except OSError:
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"envflow ui did not start:\n{child.output()}") from None
            time.sleep(0.05)


def sse_all(port: int, run_id: str, n: int, timeout: float) -> float:
    """Seconds until the run's event stream has delivered all ``n`` lines, each once, in order."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", f"/runs/{run_id}/events", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    count, kind = 0, ""
    try:
        while count < n:
            line = response.readline()
            if not line:
                break
            if line.startswith(b"event: "):
                kind = line[7:].strip().decode()
            elif line.startswith(b"data: ") and kind == "lines":
                entry = json.loads(line[6:])
                if entry["s"] != count:
                    raise RuntimeError(f"run {run_id}: line {entry['s']} arrived when {count} was due")
                count += len(entry["t"])
    finally:
        conn.close()
    elapsed = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"run {run_id}: {count} of {n} lines arrived over SSE")
    return elapsed


class PageProbe:
    """Requests a page back to back in a thread, recording each request's latency, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        request = urllib.request.Request(self.url, headers={"Accept": "text/html"})
        while not self.stop.is_set():
            t0 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            self.samples.append(time.perf_counter() - t0)

    def __enter__(self) -> PageProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def idle_latencies(url: str, count: int) -> list[float]:
    samples = []
    request = urllib.request.Request(url, headers={"Accept": "text/html"})
    for _ in range(count):
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        samples.append(time.perf_counter() - t0)
    return samples


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers(envflow=1)
    n, repeats = LINES, ctx.sizes.stream_repeats
    timeout = 60 + n / 5000
    name = h.deploy("lines")
    client = h.client
    ui, base = start_ui(ctx)
    port = int(base.rsplit(":", 1)[1])
    warm = client.run(name, {"n": 1000})
    if warm.wait(60) is not RunState.COMPLETED:
        raise RuntimeError(f"warm-up run {warm.id} failed")
    sse_all(port, warm.id, 1000, 60)

    cli: list[float] = []
    sse: list[float] = []
    idle: list[float] = []
    busy: list[float] = []
    for _ in range(repeats):
        h.wait_idle(settle=0.1)
        t0 = time.perf_counter()
        flow_run = client.run(name, {"n": n})
        follow_all(flow_run, n, timeout)
        cli.append(time.perf_counter() - t0)
        flow_run.wait(timeout)

        h.wait_idle(settle=0.1)
        idle += idle_latencies(f"{base}/runs/{flow_run.id}", IDLE_PROBES)
        t0 = time.perf_counter()
        flow_run = client.run(name, {"n": n})
        with PageProbe(f"{base}/runs/{flow_run.id}") as probe:
            sse_all(port, flow_run.id, n, timeout)
            sse.append(time.perf_counter() - t0)
        busy += probe.samples
        if flow_run.wait(timeout) is not RunState.COMPLETED:
            raise RuntimeError(f"run {flow_run.id} did not complete")
    ui.stop()

    cli_rate, sse_rate = n / stats.percentile(cli, 50), n / stats.percentile(sse, 50)
    r = stats.ratio(sse_rate, cli_rate)
    rows = [
        Row(case=f"UI live output, {n:,} lines: SSE client", envflow=stats.rate(sse_rate, "lines"),
            baselines=[f"CLI follower {stats.rate(cli_rate, 'lines')}"], ratios=[f"{r:.2f}× CLI follower"],
            target=f"≥ {TARGET}× CLI follower", met=r >= TARGET),
        Row(case="UI run page while it streams", envflow=f"p50 {stats.ms(stats.percentile(busy, 50))}, "
            f"p95 {stats.ms(stats.percentile(busy, 95))}, max {stats.ms(max(busy, default=float('nan')))}",
            baselines=[f"idle: p50 {stats.ms(stats.percentile(idle, 50))}, p95 {stats.ms(stats.percentile(idle, 95))}"],
            ratios=[f"{stats.ratio(stats.percentile(busy, 50), stats.percentile(idle, 50)):.2f}× idle p50"]),
    ]
    notes = [
        f"ui: enqueue → last line, the CLI follower and the SSE client taking turns, median of {repeats}; the run "
        f"page was requested {len(busy)} times back to back while the SSE client received ({len(idle)} times idle)."
    ]
    raw = {"lines": n, "cli_seconds": cli, "sse_seconds": sse, "page_idle_seconds": idle, "page_busy_seconds": busy}
    return Result(rows, notes, raw)
