"""Env-affinity routing: a run is taken only by a live worker that has its env; with none, it waits
and says why. Real workers with disjoint env roots, real venvs, real SIGKILLs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter

import pytest

from envflow.errors import EnvflowWarning
from envflow.models import RunState
from envflow.store import routing
from envflow.worker.presence import Presence
from envflow.worker.warm import WarmPool
from envflow.worker.worker import FlowQueue

from .support.flows import deploy, write_flow
from .support.processes import envflow_command, wait_until

FLOWS = """
    import os, sys, time
    from envflow import flow

    @flow
    def where(seconds: float = 0, first_only: bool = False):
        if not first_only or os.environ["ENVFLOW_RUN_ATTEMPT"] == "1":
            time.sleep(seconds)
        return {"worker_root": os.environ.get("ROOT_TAG"), "prefix": sys.prefix}
"""


def make_venv(path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


@pytest.fixture
def fleet(tmp_path):
    """Two env roots, each holding one venv of its own."""
    roots = {}
    for side in ("a", "b"):
        root = tmp_path / f"root-{side}"
        root.mkdir()
        make_venv(root / f"venv-{side}")
        roots[side] = root
    return roots


def worker_for(start_worker, root, tag, **extra):
    return start_worker(extra_env={"ENVFLOW_ENV_ROOTS": str(root), "ENVFLOW_PASS_ENV": "ROOT_TAG", "ROOT_TAG": tag,
                                   **extra})


def test_runs_go_only_to_the_worker_that_has_their_env(client, start_worker, workdir, fleet):
    flows = write_flow(workdir, FLOWS)
    names = {side: deploy(client, flows, "where", name=f"on-{side}", virtualenv=str(fleet[side] / f"venv-{side}"))
             for side in ("a", "b")}
    for side in ("a", "b"):
        worker_for(start_worker, fleet[side], side)
    runs = [(side, client.run(names[side])) for side in ("a", "b") * 50]
    landed = Counter()
    for side, run in runs:
        result = run.result(timeout=60)
        assert result["worker_root"] == side and result["prefix"] == str(fleet[side] / f"venv-{side}")
        landed[side] += 1
    assert landed == {"a": 50, "b": 50}
    assert all(r.record().attempts[-1].error_type is None for _, r in runs)  # no "env not found" anywhere


def test_a_run_waits_for_a_worker_with_its_env_and_says_why(client, start_worker, workdir, fleet, env_vars):
    flows = write_flow(workdir, FLOWS)
    name = deploy(client, flows, "where", name="lonely", virtualenv=str(fleet["b"] / "venv-b"))
    worker_for(start_worker, fleet["a"], "a")  # has venv-a only
    with pytest.warns(EnvflowWarning, match="waiting for a worker with venv:"):
        run = client.run(name)
    assert run.waiting and "the live worker on queue default lacks it" in run.waiting
    time.sleep(1.5)
    record = run.record()
    assert record.state is RunState.PENDING and "does not exist" not in (record.error or "")
    assert record.waiting and f"venv:{fleet['b'] / 'venv-b'}" in record.waiting.message
    env = {**os.environ, **env_vars}
    shown = subprocess.run(envflow_command("run", "inspect", run.id), env=env, capture_output=True, text=True)
    assert "waiting for a worker with venv:" in shown.stdout
    listed = subprocess.run(envflow_command("run", "ls"), env=env, capture_output=True, text=True)
    assert "waiting for a worker with venv:" in listed.stdout
    submitted = subprocess.run(envflow_command("deployment", "run", name), env=env, capture_output=True, text=True)
    assert "waiting for a worker with venv:" in submitted.stderr
    worker_for(start_worker, fleet["b"], "b")  # a capable worker starts: it takes the waiting runs
    assert run.result(timeout=60)["worker_root"] == "b"
    with warnings.catch_warnings():
        warnings.simplefilter("error", EnvflowWarning)  # no warning once a worker has it
        assert client.run(name).result(timeout=60)["worker_root"] == "b"


def test_a_dead_workers_advertisement_lapses(client, start_worker, workdir, fleet):
    flows = write_flow(workdir, FLOWS)
    name = deploy(client, flows, "where", virtualenv=str(fleet["b"] / "venv-b"))
    worker_for(start_worker, fleet["a"], "a")
    capable = worker_for(start_worker, fleet["b"], "b")
    assert client.run(name).result(timeout=60)["worker_root"] == "b"
    client.pause_queue("default")
    waiting = client.run(name)
    capable.stop(signal.SIGKILL)
    lapse = client.settings.lease_ttl + 3 * client.settings.reaper_interval + 2
    wait_until(lambda: not client.capable_workers(client.get_deployment(name)), lapse, what="the advertisement to lapse")
    client.resume_queue("default")
    time.sleep(2)  # the remaining worker, which lacks the env, must not take it
    record = waiting.record()
    assert record.state is RunState.PENDING and record.waiting and "lacks it" in record.waiting.message


def test_an_env_deleted_from_disk_is_no_longer_advertised(client, start_worker, workdir, fleet):
    flows = write_flow(workdir, FLOWS)
    name = deploy(client, flows, "where", virtualenv=str(fleet["b"] / "venv-b"))
    worker_for(start_worker, fleet["b"], "b")
    assert client.run(name).result(timeout=60)["worker_root"] == "b"
    shutil.rmtree(fleet["b"] / "venv-b")
    record = client.get_deployment(name)
    wait_until(lambda: not client.capable_workers(record), 5, what="the deleted env to stop being advertised")
    with pytest.warns(EnvflowWarning, match="does not exist"):  # the worker says why it lacks it
        client.run(name)


def test_an_env_made_after_its_deployment_is_advertised_within_seconds(client, start_worker, workdir, fleet):
    """Workers stamp the paths each env's resolution rested on, and resolve it again when one changes
    (else every ten seconds): a venv created after its deployment is taken up at once."""
    later = fleet["b"] / "venv-later"
    name = deploy(client, write_flow(workdir, FLOWS), "where", virtualenv=str(later))
    worker_for(start_worker, fleet["b"], "b")
    record = client.get_deployment(name)
    route = routing.route_key(record.env)
    wait_until(lambda: routing.waiting_reason(client.redis, "default", route), 10, what="the worker to look for it")
    make_venv(later)
    wait_until(lambda: client.capable_workers(record), 5, what="the new env to be advertised")
    assert client.run(name).result(timeout=60)["prefix"] == str(later)


def test_a_crashed_attempt_is_retried_by_a_capable_worker(client, start_worker, workdir, fleet):
    flows = write_flow(workdir, FLOWS)
    name = deploy(client, flows, "where", virtualenv=str(fleet["b"] / "venv-b"), retries=1)
    worker_for(start_worker, fleet["a"], "a")
    first = worker_for(start_worker, fleet["b"], "b")
    run = client.run(name, {"seconds": 60, "first_only": True})
    wait_until(lambda: run.state is RunState.RUNNING, 30, what="the run to start")
    first.stop(signal.SIGKILL)
    worker_for(start_worker, fleet["b"], "b-again")
    assert run.result(timeout=90)["worker_root"] == "b-again"  # not "a", which lacks the env
    assert [a.state for a in run.record().attempts] == ["CRASHED", "COMPLETED"]


def test_relative_venv_paths_route_by_each_workers_directory(client, start_worker, workdir, tmp_path, env_vars):
    flows = write_flow(workdir, FLOWS)
    name = deploy(client, flows, "where", virtualenv="./venvs/rel")
    here, there = tmp_path / "here", tmp_path / "there"
    make_venv(here / "venvs" / "rel")
    there.mkdir()
    for directory, tag in ((here, "here"), (there, "there")):
        start_worker(cwd=directory, extra_env={"ENVFLOW_ENV_ROOTS": str(directory), "ENVFLOW_PASS_ENV": "ROOT_TAG",
                                               "ROOT_TAG": tag})
    results = [client.run(name).result(timeout=60) for _ in range(6)]
    assert {r["worker_root"] for r in results} == {"here"}
    env = {**os.environ, **env_vars}
    shown = subprocess.run(envflow_command("env", "ls", "--all"), env=env, capture_output=True, text=True, check=True)
    assert "venv:./venvs/rel" in shown.stdout and str(here / "venvs" / "rel") in shown.stdout
    listed = json.loads(subprocess.run(envflow_command("env", "ls", "--all", "--json"), env=env,
                                       capture_output=True, text=True, check=True).stdout)
    assert [r["env"] for r in listed] == ["venv:./venvs/rel"]
    preview = subprocess.run(envflow_command("deployment", "preview", name), env=env, cwd=here,
                             capture_output=True, text=True, check=True)
    live = next(line for line in preview.stdout.splitlines() if line.startswith("live workers"))
    assert len(live.split()[2:]) == 1  # one name: the worker in "here"; the one in "there" lacks the env


def test_a_deployment_created_while_workers_wait_runs_without_a_premature_warning(client, start_worker, workdir,
                                                                                   fleet):
    worker_for(start_worker, fleet["a"], "a")  # waiting on its queue before the deployment exists
    name = deploy(client, write_flow(workdir, FLOWS), "where", name="fresh", virtualenv=str(fleet["a"] / "venv-a"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EnvflowWarning)  # no worker has looked for the env yet: nothing to warn of
        run = client.run(name)
    assert run.waiting is None
    assert run.result(timeout=60)["worker_root"] == "a"


def test_a_change_of_envs_ends_the_workers_wait_at_once(client, settings, workdir, fleet, tmp_path):
    """The worker's blocking dequeue (RQ's BLPOP, 30 s here) returns as soon as its presence finds a new
    env, so it listens on that env's sub-queue without waiting out the timeout."""
    mine = settings.model_copy(update={"env_roots": str(fleet["a"]), "state_dir": tmp_path / "state"})
    presence = Presence("waker", ["default"], client.redis, mine, WarmPool(0, 0))
    presence.refresh()
    client.redis.delete(routing.wake_key("waker"))
    queues = [FlowQueue("unused", connection=client.redis), FlowQueue(routing.wake_queue("waker"),
                                                                      connection=client.redis)]
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(FlowQueue.dequeue_any(queues, 30, connection=client.redis)))
    waiter.start()
    deploy(client, write_flow(workdir, FLOWS), "where", name="new", virtualenv=str(fleet["a"] / "venv-a"))
    presence.refresh()  # finds venv-a: the worker must listen on its sub-queue now
    waiter.join(10)
    assert not waiter.is_alive() and got == [None]
    assert presence.routes
    presence.remove()
    assert not client.redis.exists(routing.wake_key("waker"))


def test_rq_sees_each_worker_on_every_queue_it_listens_on(client, start_worker, workdir, fleet, env_vars):
    from rq.queue import Queue
    from rq.worker import Worker

    from envflow.store.jobs import SERIALIZER

    flows = write_flow(workdir, FLOWS)
    name = deploy(client, flows, "where", name="on-a", virtualenv=str(fleet["a"] / "venv-a"))
    worker_for(start_worker, fleet["a"], "a")
    sub = routing.rq_queue("default", routing.route_key(client.get_deployment(name).env))

    def registered() -> list[Worker]:
        return Worker.all(queue=Queue(sub, connection=client.redis, serializer=SERIALIZER))

    (worker,) = wait_until(registered, timeout=30, what="the worker under its env's sub-queue")
    assert set(worker.queue_names()) == {"default", sub}
    assert [w["queues"] for w in client.workers()] == [["default"]]  # envflow shows the queues users name
    shown = subprocess.run([os.path.join(os.path.dirname(sys.executable), "rq"), "info", "-W", "-R", "--url",
                            env_vars["ENVFLOW_REDIS_URL"], "default", sub], capture_output=True, text=True, timeout=60)
    by_queue = {line.split(":")[0].strip(): line for line in shown.stdout.splitlines() if ":" in line}
    assert shown.returncode == 0 and worker.name in by_queue[sub] and worker.name in by_queue["default"], shown.stdout


def _follow_records(run, timeout):
    """Every record a follower yields (waiting reasons included) until the run ends, or ``timeout``."""
    return list(run.records(timeout=timeout))


@pytest.mark.parametrize("kind", ["typo", "dangling"])
def test_a_run_every_live_worker_lacks_the_env_of_fails_with_their_error(client, start_worker, workdir, fleet, kind):
    """Bounded where it is a mistake: once every live worker of the queue has looked and lacks the env, the
    run FAILs after ENVFLOW_ENV_WAIT, with the error it would have failed with there; followers hear why
    first, for a deployment made after the worker started (no worker had looked at submit)."""
    from envflow.output import AttemptEnd
    from envflow.waits import Waiting

    worker_for(start_worker, fleet["a"], "a", ENVFLOW_ENV_WAIT="2")
    if kind == "dangling":
        venv = make_venv(fleet["a"] / "dangling")
        (venv / "pyvenv.cfg").write_text("home = /nowhere/bin\ninclude-system-site-packages = false\n")
        for python in (venv / "bin").glob("python*"):
            python.unlink()
            python.symlink_to("/nowhere/bin/python3")
        given = str(venv)
    else:
        given = str(fleet["a"] / "venv-aa")
    name = deploy(client, write_flow(workdir, FLOWS), "where", name=f"bad-{kind}", virtualenv=given)
    run = client.run(name)  # at once: no worker has looked for the new env yet
    records = _follow_records(run, 40)
    waits = [r for r in records if isinstance(r, Waiting)]
    assert waits and waits[0].kind == "env" and given in waits[0].message, records
    assert isinstance(records[-1], AttemptEnd) and records[-1].state == "FAILED", records
    record = run.record()
    assert record.state is RunState.FAILED and record.error_type == "EnvNotFound"
    if kind == "typo":
        assert f"{given!r} does not exist: resolved to {given}" in record.error
        assert f"worker's directory, {workdir}" in record.error
    else:
        assert "/nowhere/bin" in record.error  # the dangling interpreter's home
    assert "ENVFLOW_ENV_WAIT=2" in record.error


def test_with_no_live_worker_a_run_waits_and_says_so(client, workdir, fleet):
    """Waits where it is not a mistake: no live worker serves the queue (a fleet scaling from zero)."""
    from envflow.errors import RunTimeout

    name = deploy(client, write_flow(workdir, FLOWS), "where", virtualenv=str(fleet["a"] / "venv-a"))
    with pytest.warns(EnvflowWarning, match="no live worker on queue default"):
        run = client.run(name)
    assert run.record().waiting.kind == "no-worker"
    lines = list(run.follow(timeout=1))
    assert [(line.stream, line.text) for line in lines] == [("envflow", "envflow: waiting: no live worker on queue default")]
    with pytest.raises(RunTimeout, match="no live worker on queue default") as raised:
        run.wait(timeout=0.5)
    assert raised.value.waiting.kind == "no-worker"
    assert client.store.reaper.fail_unrunnable() == [] and run.state is RunState.PENDING


def test_env_wait_forever_keeps_waiting(client, start_worker, workdir, fleet, env_vars):
    from envflow.settings import Settings

    assert Settings().env_wait == 30 and Settings(env_wait="forever").env_wait is None
    worker_for(start_worker, fleet["a"], "a", ENVFLOW_ENV_WAIT="forever")
    name = deploy(client, write_flow(workdir, FLOWS), "where", virtualenv=str(fleet["b"] / "venv-b"))
    wait_until(lambda: routing.waiting_for(client.redis, "default", routing.route_key(client.get_deployment(name).env)),
               10, what="the worker to look for the env")
    with pytest.warns(EnvflowWarning, match="lacks it"):
        run = client.run(name)
    time.sleep(3)
    assert run.state is RunState.PENDING and run.record().waiting.kind == "env"


def test_the_waiting_reason_changes_as_workers_come(client, start_worker, workdir, fleet):
    """A follower hears each new reason: no worker at first, then what the first worker to look says."""
    from envflow.waits import Waiting

    name = deploy(client, write_flow(workdir, FLOWS), "where", virtualenv=str(fleet["b"] / "venv-b"))
    with pytest.warns(EnvflowWarning):
        run = client.run(name)
    seen: list[Waiting] = []

    def follow():
        for record in run.records(timeout=30):
            if isinstance(record, Waiting):
                seen.append(record)
                if record.kind == "env":
                    return

    follower = threading.Thread(target=follow)
    follower.start()
    wait_until(lambda: seen, 10, what="the first reason")
    worker_for(start_worker, fleet["a"], "a", ENVFLOW_ENV_WAIT="forever")
    follower.join(30)
    assert [w.kind for w in seen] == ["no-worker", "env"], seen
    assert "outside the allowed env roots" in seen[1].message and "ENVFLOW_ENV_ROOTS" in seen[1].message


def test_a_run_reaching_a_worker_whose_env_just_vanished_waits_again(client, start_worker, workdir, fleet):
    """The worker advertised the env, which vanished before its presence looked again: the run is given
    back (its attempt does not count) and waits for a worker that has it, instead of FAILing."""
    venv, away = fleet["a"] / "venv-a", fleet["a"] / "away"
    name = deploy(client, write_flow(workdir, FLOWS), "where", virtualenv=str(venv))
    worker = worker_for(start_worker, fleet["a"], "a", ENVFLOW_ENV_WAIT="forever")
    record = client.get_deployment(name)
    for _ in range(3):  # the run must beat the worker's next look (about a second): it nearly always does
        wait_until(lambda: client.capable_workers(record), 10, what="the env to be advertised")
        venv.rename(away)
        run = client.run(name)
        wait_until(lambda run=run: run.record().waiting is not None or "back to wait" in worker.output(), 15,
                   what="the run to wait again")
        away.rename(venv)
        assert run.result(timeout=30)["worker_root"] == "a"
        if "back to wait" in worker.output():
            break
    assert "back to wait for a worker that has it" in worker.output()
    done = run.record()
    assert done.attempt == 1 and [a.state for a in done.attempts] == ["COMPLETED"], done.attempts


def test_a_stale_reason_is_cleared_once_a_capable_worker_is_live(client, start_worker, workdir, fleet):
    name = deploy(client, write_flow(workdir, FLOWS), "where", virtualenv=str(fleet["a"] / "venv-a"))
    client.pause_queue("default")  # the worker that comes is live and has the env, but takes nothing yet
    with pytest.warns(EnvflowWarning, match="no live worker"):
        run = client.run(name)
    worker_for(start_worker, fleet["a"], "a")
    wait_until(lambda: client.capable_workers(client.get_deployment(name)), 10, what="the env to be advertised")
    client.store.reaper.fail_unrunnable()
    assert run.state is RunState.PENDING and run.record().waiting is None
