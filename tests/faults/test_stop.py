"""Cancel, timeout, retries and graceful worker stop: real signals, real process trees."""

from __future__ import annotations

import signal
import time

import pytest

from envflow.models import RunState

from ..support.flows import NO_WORKER_YET, deploy, write_flow
from ..support.processes import journal_events, survivors, wait_until
from ..support.pythons import make_conda_prefix

STUBBORN = """
    import signal, time
    from envflow import flow

    @flow
    def stubborn():
        signal.signal(signal.SIGTERM, lambda *a: print("ignoring SIGTERM", flush=True))
        print("started", flush=True)
        while True:
            time.sleep(0.1)
"""

TIDY = """
    import time
    from envflow import flow

    @flow
    def tidy():
        try:
            print("started", flush=True)
            time.sleep(60)
        finally:
            print("cleaned up", flush=True)
"""


def test_cancel_running_run_kills_its_process_tree(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    start_worker()
    run = client.run(name, {"tag": "c", "seconds": 60, "child": True})
    wait_until(lambda: journal_events(journal), 20, what="the flow to start")
    events = journal_events(journal)
    assert len(survivors(events)) == 2
    assert client.cancel(run.id) == "requested"
    assert run.wait(20) is RunState.CANCELLED
    assert survivors(events) == []
    record = run.record()
    assert record.reason == "cancelled by request" and record.attempts[0].state == "CANCELLED"
    assert client.cancel(run.id) == "ended"


def test_cancel_unwinds_the_flow_then_escalates_to_sigkill(client, start_worker, venv, workdir):
    tidy = deploy(client, write_flow(workdir, TIDY, "tidy.py"), "tidy", virtualenv=str(venv))
    stubborn = deploy(client, write_flow(workdir, STUBBORN, "stubborn.py"), "stubborn", virtualenv=str(venv))
    start_worker()
    run = client.run(tidy)
    lines = run.follow(timeout=30)
    assert next(lines).text == "started"
    client.cancel(run.id)
    assert [line.text for line in lines][-1] == "cleaned up"  # SIGTERM raised SystemExit in the flow
    assert run.wait(10) is RunState.CANCELLED
    run = client.run(stubborn)
    lines = run.follow(timeout=30)
    assert next(lines).text == "started"
    cancelled_at = time.monotonic()
    client.cancel(run.id)
    assert run.wait(20) is RunState.CANCELLED
    took = time.monotonic() - cancelled_at
    grace = client.settings.cancel_grace
    assert grace <= took < grace + 5  # SIGKILL came after the grace period
    assert "ignoring SIGTERM" in [line.text for line in lines]


def test_cancel_is_durable_when_the_stop_message_is_missed(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    start_worker()
    run = client.run(name, {"tag": "durable", "seconds": 60})
    wait_until(lambda: journal_events(journal), 20, what="the flow to start")
    # Record the request only (what cancel.lua does); no pub/sub message reaches the worker.
    client.redis.hset(f"envflow:run:{run.id}", "cancel_requested_at", time.time())
    assert run.wait(20) is RunState.CANCELLED  # seen at the next heartbeat


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_cancelled_queued_run_never_starts(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    run = client.run(name, {"tag": "q"})
    assert client.cancel(run.id) == "cancelled"
    start_worker("--burst", wait_ready=False).proc.wait(30)
    assert run.state is RunState.CANCELLED and journal_events(journal) == []


def test_timeout_per_deployment_and_per_run(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv), timeout=4)
    start_worker()
    run = client.run(name, {"tag": "t", "seconds": 30, "child": True})
    # The flow and its child must have started, else "no survivors" below would hold for no process at all.
    wait_until(lambda: any(e.get("child") for e in journal_events(journal)), 20, what="the flow and its child")
    assert run.wait(30) is RunState.TIMED_OUT
    assert run.record().reason == "timed out after 4s"
    assert survivors(journal_events(journal)) == []
    quick = client.run(name, {"tag": "ok", "seconds": 2}, timeout=10)  # the run's own timeout wins
    assert quick.wait(30) is RunState.COMPLETED


def test_retries_record_each_attempt(client, start_worker, venv, workdir, tmp_path):
    counter = tmp_path / "count"
    flaky = write_flow(workdir, f"""
        from envflow import flow

        @flow
        def flaky():
            with open({str(counter)!r}, "a+") as f:
                f.seek(0)
                n = len(f.read()) + 1
                f.write("x")
            print(f"attempt {{n}}")
            if n < 3:
                raise RuntimeError(f"failure {{n}}")
            return n
    """, "flaky.py")
    name = deploy(client, flaky, "flaky", virtualenv=str(venv), retries=3, retry_delay=[0, 1])
    start_worker()
    run = client.run(name)
    assert run.result(timeout=60) == 3
    record = run.record()
    assert [(a.n, a.state, a.error) for a in record.attempts] == [
        (1, "FAILED", "failure 1"), (2, "FAILED", "failure 2"), (3, "COMPLETED", None)]
    states = [t[0] for t in record.transitions]
    assert states == ["PENDING", "RUNNING", "PENDING", "RUNNING", "SCHEDULED", "RUNNING", "COMPLETED"]
    by_attempt = {}
    for line in run.follow(timeout=10):
        by_attempt.setdefault(line.attempt, []).append(line.text)
    assert by_attempt[1][0] == "attempt 1" and by_attempt[3] == ["attempt 3"]
    assert record.error is None and record.error_type is None


def test_graceful_stop_lets_a_short_flow_finish(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    worker = start_worker(extra_env={"ENVFLOW_SHUTDOWN_GRACE": "10"})
    run = client.run(name, {"tag": "g", "seconds": 1.5})
    queued = client.run(name, {"tag": "next"})
    wait_until(lambda: journal_events(journal), 20, what="the flow to start")
    assert worker.stop(signal.SIGTERM, timeout=30) == 0
    assert run.state is RunState.COMPLETED
    assert queued.state is RunState.PENDING  # a stopping worker takes no new runs


def test_graceful_stop_cancels_a_flow_that_overstays(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    worker = start_worker(extra_env={"ENVFLOW_SHUTDOWN_GRACE": "1"})
    run = client.run(name, {"tag": "long", "seconds": 60, "child": True})
    wait_until(lambda: journal_events(journal), 20, what="the flow to start")
    stopped_at = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - stopped_at < 1 + client.settings.cancel_grace + 5
    assert run.state is RunState.CANCELLED
    assert "worker shutting down" in run.record().reason
    assert survivors(journal_events(journal)) == []


def test_timeout_covers_a_slow_activation(client, start_worker, workdir, work_flow, journal):
    make_conda_prefix(workdir / "slow", env_vars={}, scripts={"slow.sh": "sleep 5\n"})
    name = deploy(client, work_flow, "work", condaenv="./slow", timeout=1)
    start_worker()
    run = client.run(name, {"tag": "s"})
    assert run.wait(30) is RunState.TIMED_OUT
    assert "while its environment was being activated" in run.record().reason
    assert journal_events(journal) == []  # the flow never started
