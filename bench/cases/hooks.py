"""Hooks: a run's final state -> its webhook at a receiver, beside final state -> a follower's last entry.

The ``hello`` flow runs with a COMPLETED hook POSTing to an HTTP receiver on loopback in the bench's own
process; the worker's maintenance delivers it (no scheduler runs). Each sample's start is the run's
COMPLETED transition time (the run record, written by the worker's finish script on the same machine's
clock); the follower's figure is when ``FlowRun.follow()`` of the same run returned (the run's end record,
written by that same script). The first runs are dropped as warm-up.
"""

from __future__ import annotations

import http.server
import threading
import time

from .. import stats
from ..report import Row
from . import Context, Result

SKIP = 2
TARGET_P50 = 1.0


class _Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.event = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                import json

                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                arrived = time.time()
                with receiver.event:
                    receiver.arrivals.setdefault(json.loads(body)["data"]["run_id"], arrived)
                    receiver.event.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, run_id: str, timeout: float) -> float:
        with self.event:
            if not self.event.wait_for(lambda: run_id in self.arrivals, timeout):
                raise RuntimeError(f"run {run_id}: no webhook within {timeout:g}s")
            return self.arrivals[run_id]


def run(ctx: Context) -> Result:
    from envflow.hook_spec import Hook

    h = ctx.harness
    receiver = _Receiver()
    try:
        name = h.deploy("hello")
        record = h.client.get_deployment(name)
        h.client.create_deployment(record.model_copy(update={"hooks": [Hook(on=["COMPLETED"], webhook=receiver.url)]}),
                                   h.client.flow_source(record))
        h.use_workers(envflow=1)
        h.wait_idle()
        webhook, follower = [], []
        for _ in range(max(ctx.sizes.dispatch_samples // 2, 6) + SKIP):
            flow_run = h.client.run(name)
            for _line in flow_run.follow(timeout=60):
                pass
            followed = time.time()
            arrived = receiver.wait(flow_run.id, 30)
            ended = flow_run.record().entered(flow_run.record().state)
            assert ended is not None
            webhook.append(arrived - ended)
            follower.append(followed - ended)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        h.client.create_deployment(record, h.client.flow_source(record))  # the other cases' deployment, hookless
    w, f = webhook[SKIP:], follower[SKIP:]
    rows = []
    for p in (50, 99):
        wp, fp = stats.percentile(w, p), stats.percentile(f, p)
        rows.append(Row(case=f"hook latency p{p} (final state → webhook received)", envflow=stats.ms(wp),
                        baselines=[f"final state → follower's last entry {stats.ms(fp)}"],
                        ratios=[f"{stats.delta_ms(wp - fp)}"],
                        target=f"≤ {TARGET_P50 * 1000:.0f} ms" if p == 50 else "—",
                        met=(wp <= TARGET_P50) if p == 50 else None))
    notes = [f"hooks: {len(w)} runs (first {SKIP} dropped), delivered by the worker's maintenance thread."]
    return Result(rows, notes, {"webhook": webhook, "follower": follower,
                                "summary": {"webhook": stats.summary(w), "follower": stats.summary(f)}})
