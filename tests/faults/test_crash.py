"""Workers killed with SIGKILL at every point of a run's life: no run lost, stuck, or run twice at once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from envflow.models import RunState
from envflow.store import routing

from ..support.flows import NO_WORKER_YET, deploy
from ..support.processes import envflow_command, journal_events, no_overlap, survivors, wait_until
from ..support.pythons import make_conda_prefix


def test_killed_mid_run_becomes_crashed_and_leaves_no_process(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    worker = start_worker()
    run = client.run(name, {"tag": "a", "seconds": 60, "child": True})
    lines = run.follow(timeout=60)
    assert next(lines).text == "started a"
    started = journal_events(journal)
    assert survivors(started)  # the flow and its child are running
    worker.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    assert run.wait(30) is RunState.CRASHED  # no other worker: the waiting caller reaps it
    detected = time.monotonic() - killed_at
    assert detected < client.settings.lease_ttl + 3 * client.settings.reaper_interval + 2
    wait_until(lambda: not survivors(started), 5, what="flow processes to die with their worker")
    record = run.record()
    assert record.attempts[-1].state == "CRASHED" and "no heartbeat" in record.reason
    assert list(lines) == []  # the follower ends at the crash


def test_crashed_run_with_retries_runs_again_never_concurrently(client, start_worker, venv, work_flow, journal):
    name = deploy(client, work_flow, "work", virtualenv=str(venv), retries=2)
    first = start_worker()
    run = client.run(name, {"tag": "r", "seconds": 2})
    wait_until(lambda: journal_events(journal), 20, what="the first attempt to start")
    assert next(run.follow(timeout=20)).text == "started r"  # recorded before the kill, which may come any time
    first.stop(signal.SIGKILL)
    start_worker()
    assert run.wait(60) is RunState.COMPLETED
    record = run.record()
    assert [a.state for a in record.attempts] == ["CRASHED", "COMPLETED"]
    events = journal_events(journal)
    assert [e["event"] for e in events] == ["start", "start", "end"]
    no_overlap(events)
    lines = [(line.attempt, line.text) for line in run.follow(timeout=10)]
    assert lines == [(1, "started r"), (2, "started r"), (2, "done r")]  # each attempt's output kept apart


@pytest.mark.parametrize("namespace", ["same", "other"])  # other: a container restarted on the same volume
def test_restarted_worker_reaps_its_predecessor_at_once(client, start_worker, venv, work_flow, journal, env_vars,
                                                        workdir, tmp_path, namespace):
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    slow_lease = {"ENVFLOW_LEASE_TTL": "120"}  # only the restart can explain a quick reap
    worker = start_worker(extra_env=slow_lease)
    run = client.run(name, {"tag": "p", "seconds": 60})
    wait_until(lambda: journal_events(journal), 20, what="the flow to start")
    worker.stop(signal.SIGKILL)
    restarted_at = time.monotonic()
    if namespace == "same":
        start_worker(extra_env=slow_lease)
    else:  # its predecessor's pid cannot be checked from there: the leases no longer renewed prove it dead
        restarted = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", *envflow_command("worker", "start")],
                                     cwd=workdir, env={**os.environ, **env_vars, **slow_lease}, start_new_session=True,
                                     stdout=open(tmp_path / "restarted.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: run.state is RunState.CRASHED, 10, what="the restarted worker to reap the run")
    finally:
        if namespace == "other":
            os.killpg(restarted.pid, signal.SIGKILL)  # the init of its pid namespace: it ignores signals it has no handler for yet
            restarted.wait(30)
    assert time.monotonic() - restarted_at < 10
    assert "died and was restarted" in run.record().reason


def test_killed_just_after_dequeue(client, start_worker, venv, work_flow, journal):
    """SIGSTOP an idle worker blocked on the queue, enqueue: Redis hands it the job; then SIGKILL it."""
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    worker = start_worker()
    time.sleep(0.3)
    os.kill(worker.pid, signal.SIGSTOP)
    run = client.run(name, {"tag": "d"})
    # A routed run waits in its env's sub-queue; a worker serving several queues pops it without an
    # intermediate list (BLPOP), so dequeued means: gone from that queue, not yet claimed.
    origin = f"rq:queue:{routing.rq_queue('default', routing.route_key(client.get_deployment(name).env))}"
    wait_until(lambda: client.redis.llen(origin) == 0, 5, what="the job to be dequeued")
    worker.stop(signal.SIGKILL)
    assert run.state is RunState.PENDING and journal_events(journal) == []
    start_worker()
    assert run.wait(60) is RunState.COMPLETED
    assert [a.state for a in run.record().attempts] == ["COMPLETED"]  # it never started before: no attempt lost


def test_killed_during_env_activation(client, start_worker, workdir, work_flow, journal, tmp_path):
    marker = tmp_path / "activating"
    make_conda_prefix(workdir / "slowenv", env_vars={},
                      scripts={"slow.sh": f'touch "{marker}"\nsleep 3\n'})
    name = deploy(client, work_flow, "work", condaenv="./slowenv", retries=1)
    worker = start_worker()
    run = client.run(name, {"tag": "act"})
    wait_until(marker.exists, 20, what="activation to begin")
    worker.stop(signal.SIGKILL)
    start_worker()
    assert run.wait(60) is RunState.COMPLETED
    assert [a.state for a in run.record().attempts] == ["CRASHED", "COMPLETED"]


def test_killed_after_the_flow_exited_before_its_end_was_recorded(client, start_worker, venv, work_flow, journal):
    """SIGSTOP the worker while the flow runs; the flow finishes; SIGKILL the worker before it records it."""
    name = deploy(client, work_flow, "work", virtualenv=str(venv), retries=1)
    worker = start_worker()
    run = client.run(name, {"tag": "x", "seconds": 0.5})
    wait_until(lambda: journal_events(journal), 20, what="the flow to start")
    os.kill(worker.pid, signal.SIGSTOP)
    wait_until(lambda: [e for e in journal_events(journal) if e["event"] == "end"], 10, what="the flow to end")
    worker.stop(signal.SIGKILL)
    start_worker()
    assert run.wait(60) is RunState.COMPLETED
    assert [a.state for a in run.record().attempts] == ["CRASHED", "COMPLETED"]
    no_overlap(journal_events(journal))


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_random_kills_lose_nothing(client, start_worker, venv, work_flow, journal):
    rng = random.Random(20261125)
    name = deploy(client, work_flow, "work", virtualenv=str(venv), retries=5)
    runs = [client.run(name, {"tag": f"t{i}", "seconds": rng.choice([0, 0.05, 0.3]), "lines": rng.choice([0, 50])})
            for i in range(25)]
    deadline = time.monotonic() + 90
    kills = 0
    while time.monotonic() < deadline and kills < 12:
        worker = start_worker()
        time.sleep(rng.uniform(0.05, 0.8))
        worker.stop(signal.SIGKILL)
        kills += 1
        if all(r.state.is_final for r in runs):
            break
    start_worker()
    states = [r.wait(60) for r in runs]
    assert states == [RunState.COMPLETED] * len(runs), [r.record().attempts for r in runs]
    events = journal_events(journal)
    no_overlap(events)
    wait_until(lambda: not survivors(events), 5, what="every flow process to be gone")
    for r in runs:
        record = r.record()
        assert record.attempts[-1].state == "COMPLETED"
        assert all(a.state == "CRASHED" for a in record.attempts[:-1])
        ends = [e for e in events if e["event"] == "end" and e["run"] == record.parameters["tag"]]
        assert len(ends) >= 1
    assert client.redis.zcard("envflow:runs:active") == 0 and client.redis.zcard("envflow:runs:pending") == 0


def test_restarted_after_the_lease_lapsed_still_reaps_at_once(client, start_worker, venv, work_flow, journal):
    """The predecessor's lease is long gone when it comes back: its run must not stay RUNNING."""
    name = deploy(client, work_flow, "work", virtualenv=str(venv))
    worker = start_worker()
    run = client.run(name, {"tag": "late", "seconds": 60})
    wait_until(lambda: journal_events(journal), 20, what="the flow to start")
    worker.stop(signal.SIGKILL)
    wait_until(lambda: not client.redis.exists(f"envflow:run:{run.id}:lease"), client.settings.lease_ttl + 5,
               what="the lease to lapse")
    assert run.state is RunState.RUNNING  # nobody reaped it yet: no other worker, no waiting caller
    start_worker()
    wait_until(lambda: run.state is RunState.CRASHED, 10, what="the restarted worker to reap the run")
    assert "died and was restarted" in run.record().reason


def test_workers_sharing_a_hostname_have_their_own_names(client, start_worker, tmp_path, env_vars):
    """Host networking, fixed hostnames, pods: two workers on one hostname, each with its own state dir."""
    import subprocess

    from rq.worker import Worker

    from envflow.store.jobs import SERIALIZER

    from ..support.processes import envflow_command

    dirs = [tmp_path / "state-a", tmp_path / "state-b"]
    first, second = (start_worker(extra_env={"ENVFLOW_STATE_DIR": str(d)}) for d in dirs)
    names = sorted(w.name for w in Worker.all(connection=client.redis, serializer=SERIALIZER))
    assert len(names) == 2 and names[0] != names[1], names

    def health(state_dir):
        env = {**os.environ, **env_vars, "ENVFLOW_STATE_DIR": str(state_dir)}
        return subprocess.run(envflow_command("worker", "health"), env=env, capture_output=True, text=True, timeout=60)

    assert health(dirs[0]).returncode == 0 and health(dirs[1]).returncode == 0
    first.stop()
    left = [w.name for w in Worker.all(connection=client.redis, serializer=SERIALIZER)]
    assert len(left) == 1 and left[0] in names  # the other worker is still registered
    assert health(dirs[1]).returncode == 0
    gone = health(dirs[0])
    assert gone.returncode != 0 and "is running with the state dir" in gone.stderr
    assert second.proc.poll() is None
