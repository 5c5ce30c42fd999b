"""Concurrency limits: slots taken by the claim, freed by the end of the attempt, handed to the run in line.

The first tests drive the run protocol directly (as a worker would); the rest run real workers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from click.testing import CliRunner
from rq.job import JobStatus

from envflow.cli.main import cli
from envflow.client import Client
from envflow.errors import RunTimeout
from envflow.models import Attempt, EnvSpec, RunState
from envflow.store import keys, routing
from envflow.store.protocol import Claimed, Ending, NotClaimed

from .support.flows import NO_WORKER_YET, deploy, write_flow
from .support.processes import RedisServer, wait_until
from .support.runs import record

pytestmark = pytest.mark.filterwarnings(NO_WORKER_YET)  # runs submitted before any worker, on purpose

# Each run marks itself running in a shared directory and counts the marks it sees: the most
# seen by any run is the most flows that ran at once (a slot outlives its flow process).
HOLD = """
    import os, time, uuid
    from envflow import flow

    @flow
    def hold(directory: str, seconds: float = 0.5):
        mine = os.path.join(directory, "running-" + uuid.uuid4().hex)
        open(mine, "w").close()
        seen = len([n for n in os.listdir(directory) if n.startswith("running-")])
        with open(os.path.join(directory, "pid-" + str(os.getpid())), "w"):
            pass
        time.sleep(seconds)
        os.remove(mine)
        return seen
"""


def _register(client, name="flow/dep", **fields):
    return client.create_deployment(record(name).model_copy(update=fields))


def _dequeue(client, run_id, queue="default"):
    """Take the run's job off its RQ queue, as a worker's dequeue does."""
    assert client.redis.lrem(keys.RQ_QUEUE_PREFIX + queue, 1, run_id) == 1


def _claim(client, run_id, worker="w1"):
    _dequeue(client, run_id)
    return client.store.scripts.claim(run_id, worker, "default").run()


def _queued(client, queue="default"):
    return [raw.decode() for raw in client.redis.lrange(keys.RQ_QUEUE_PREFIX + queue, 0, -1)]


def _finish(client, run_id, claimed, state=RunState.COMPLETED):
    attempt = Attempt(n=claimed.attempt, worker="w1", started_at=claimed.started_at, ended_at=round(time.time(), 6),
                      state=state.value)
    assert client.store.scripts.finish(run_id, Ending(attempt, state)).run()


def test_a_full_limit_parks_the_run_and_the_end_of_the_holder_wakes_it(client):
    _register(client, concurrency_limit=1)
    first, second = client.run("flow/dep").id, client.run("flow/dep").id
    held = _claim(client, first)
    assert isinstance(held, Claimed)
    client.redis.hset(keys.RQ_JOB_PREFIX + second, "status", JobStatus.STARTED.value)  # as a worker's start does
    parked = _claim(client, second)
    assert parked == NotClaimed("limited", f"waiting for a slot of deployment flow/dep (1 of 1, held by run {first[:8]})")
    assert _queued(client) == []  # parked: out of the queue, not polling
    assert client.redis.hget(keys.RQ_JOB_PREFIX + second, "status").decode() == JobStatus.QUEUED.value
    waiting = client.store.get(second)
    assert waiting.state is RunState.PENDING and waiting.waiting is not None
    assert (waiting.waiting.kind, waiting.waiting.message) == ("limit", parked.detail)
    assert waiting.waiting.details == {"limit": "deployment:flow/dep"}
    [info] = client.limits()
    assert (info.name, info.slots, info.holders, info.waiting) == ("deployment:flow/dep", 1, {first: 1}, 1)
    _finish(client, first, held)
    assert _queued(client) == [second]  # woken in the same script, at the front of its queue
    assert client.store.get(second).waiting is None
    assert isinstance(_claim(client, second), Claimed)
    [info] = client.limits()
    assert (info.holders, info.waiting) == ({second: 1}, 0)


def test_all_of_a_runs_limits_or_none_and_first_in_first_out(client):
    client.set_limit("a", 1)
    client.set_limit("b", 1)
    _register(client, "flow/ab", tags=["a", "b"])
    _register(client, "flow/a", tags=["a"])
    _register(client, "flow/b", tags=["b"])
    holder_a, holder_b = client.run("flow/a").id, client.run("flow/b").id
    both1, both2, later_a = client.run("flow/ab").id, client.run("flow/ab").id, client.run("flow/a").id
    claim_a, claim_b = _claim(client, holder_a), _claim(client, holder_b)
    for run_id in (both1, both2, later_a):
        assert isinstance(_claim(client, run_id), NotClaimed)
    holders = {i.name: i.holders for i in client.limits()}
    assert holders == {"a": {holder_a: 1}, "b": {holder_b: 1}}  # no run holds one of two
    _finish(client, holder_a, claim_a)
    assert _queued(client) == []  # a is free, but both1 (first in line) also waits for b: it keeps a's slot
    _finish(client, holder_b, claim_b)
    assert _queued(client) == [both1]
    assert isinstance(_claim(client, both1), Claimed)
    info = {i.name: (i.holders, i.waiting) for i in client.limits()}
    assert info == {"a": ({both1: 1}, 2), "b": ({both1: 1}, 1)}


def test_raising_a_limit_wakes_runs_at_once_and_lowering_lets_running_ones_finish(client):
    client.set_limit("gpu", 1)
    _register(client, tags=["gpu"])
    runs = [client.run("flow/dep").id for _ in range(4)]
    claims = [_claim(client, run_id) for run_id in runs]
    assert isinstance(claims[0], Claimed) and all(isinstance(c, NotClaimed) for c in claims[1:])
    client.set_limit("gpu", 3)
    assert _queued(client) == runs[1:3]  # the two oldest, in order
    assert all(isinstance(_claim(client, run_id), Claimed) for run_id in runs[1:3])
    client.set_limit("gpu", 1)
    _finish(client, runs[0], claims[0])
    assert _queued(client) == []  # 2 still hold slots of a limit of 1
    client.remove_limit("gpu")
    assert _queued(client) == [runs[3]]


def test_cancel_of_a_parked_run_moves_the_next_one_up(client):
    client.set_limit("gpu", 2)
    _register(client, tags=["gpu"])
    _register(client, "flow/two", tags=["gpu", "other"])
    client.set_limit("other", 0)
    blocked = client.run("flow/two").id
    assert isinstance(_claim(client, blocked), NotClaimed)  # in line on gpu (first), and on other
    first = client.run("flow/dep").id
    assert isinstance(_claim(client, first), Claimed)
    behind = client.run("flow/dep").id
    assert isinstance(_claim(client, behind), NotClaimed)  # 1 slot free, kept for the blocked run
    assert client.cancel(blocked) == "cancelled"
    assert client.store.get(blocked).state is RunState.CANCELLED
    assert _queued(client) == [behind]
    assert {i.name: i.waiting for i in client.limits()} == {"gpu": 0, "other": 0}  # woken: out of line


def test_on_limit_cancel_ends_the_run_with_the_reason(client):
    _register(client, concurrency_limit=1, on_limit="cancel")
    first, second = client.run("flow/dep").id, client.run("flow/dep").id
    assert isinstance(_claim(client, first), Claimed)
    assert _claim(client, second) == NotClaimed("ended", "CANCELLED")
    ended = client.store.get(second)
    assert ended.state is RunState.CANCELLED
    assert ended.reason == f"no free slot of deployment flow/dep (1 of 1, held by run {first[:8]}), and on_limit is cancel"


def test_limit_cli(client):
    runner = CliRunner()
    assert runner.invoke(cli, ["limit", "set", "gpu", "2"]).output == "limit gpu: 2 slots\n"
    out = runner.invoke(cli, ["limit", "ls", "--json"])
    assert json.loads(out.output) == [{"name": "gpu", "slots": 2, "in_use": 0, "holders": {}, "waiting": 0,
                                       "deployment": None}]
    assert "gpu" in runner.invoke(cli, ["limit", "ls"]).output
    assert runner.invoke(cli, ["limit", "rm", "gpu"]).exit_code == 0
    missing = runner.invoke(cli, ["limit", "rm", "gpu"])
    assert missing.exit_code == 1 and "no limit 'gpu'" in missing.output


# With real workers


@pytest.fixture
def hold(client, workdir, venv, tmp_path):
    """Deploy the holding flow under some fields; runs share one directory of marks."""
    flows = write_flow(workdir, HOLD)
    marks = tmp_path / "marks"
    marks.mkdir()

    def make(name: str, **fields) -> str:
        return deploy(client, flows, "hold", name=name, virtualenv=str(venv),
                      parameters={"directory": str(marks)}, **fields)

    make.marks = marks  # type: ignore[attr-defined]
    return make


def test_never_exceeded_with_three_workers_racing_and_reached(client, start_worker, hold):
    name = hold("two", concurrency_limit=2)
    for _ in range(3):
        start_worker()
    runs = [client.run(name, {"seconds": 0.6}) for _ in range(9)]
    seen = [run.result(60) for run in runs]
    assert max(seen) == 2  # reached: two ran at once, and never three
    assert client.limits()[0].holders == {} and client.limits()[0].waiting == 0


def test_two_runs_each_needing_two_limits_take_both_or_none(client, start_worker, hold):
    client.set_limit("a", 1)
    client.set_limit("b", 1)
    ab, ba = hold("ab", tags=["a", "b"]), hold("ba", tags=["b", "a"])
    start_worker()
    start_worker()
    runs = [client.run(name, {"seconds": 0.3}) for name in (ab, ba, ab, ba)]
    assert [run.result(60) for run in runs] == [1, 1, 1, 1]  # no deadlock, never two at once


def test_a_killed_holders_slot_is_freed_by_the_reaper(client, start_worker, hold, env_vars):
    name = hold("one", concurrency_limit=1)
    doomed = start_worker()
    first = client.run(name, {"seconds": 60})
    wait_until(lambda: client.store.state(first.id) is RunState.RUNNING, 30, what="the first run to start")
    pids = lambda: [int(p.name[4:]) for p in hold.marks.glob("pid-*")]  # noqa: E731
    wait_until(lambda: pids(), 30, what="the flow process")
    start_worker()
    second = client.run(name, {"seconds": 0})
    wait_until(lambda: client.store.get(second.id).waiting is not None, 30, what="the second run to wait")
    doomed.proc.send_signal(signal.SIGKILL)
    for pid in pids():
        os.kill(pid, signal.SIGKILL)  # its flow too: only the lease may free the slot
    for mark in hold.marks.glob("running-*"):
        mark.unlink()  # the killed flow's
    killed = time.monotonic()
    assert second.result(30) == 1
    took = time.monotonic() - killed
    assert first.wait(5) is RunState.CRASHED
    assert took < float(env_vars["ENVFLOW_LEASE_TTL"]) + 10  # lease + a reaper pass, with room for a slow machine


def test_a_waiting_run_starts_when_the_limit_is_raised_and_can_be_cancelled(client, start_worker, hold):
    client.set_limit("gpu", 0)
    name = hold("gpu", tags=["gpu"])
    start_worker()
    runs = [client.run(name, {"seconds": 0}) for _ in range(3)]
    wait_until(lambda: all(client.store.get(r.id).waiting for r in runs), 30, what="the runs to wait")
    assert client.store.get(runs[0].id).waiting.message == "waiting for a slot of limit gpu (0 of 0)"
    with pytest.raises(RunTimeout, match="waiting for a slot of limit gpu"):
        runs[2].wait(0.5)
    assert runs[2].cancel() == "cancelled"
    client.set_limit("gpu", 5)
    assert [r.wait(30) for r in runs] == [RunState.COMPLETED, RunState.COMPLETED, RunState.CANCELLED]


def test_on_limit_cancel_never_runs_the_second(client, start_worker, hold):
    name = hold("once", concurrency_limit=1, on_limit="cancel")
    start_worker()
    start_worker()
    first = client.run(name, {"seconds": 30})
    wait_until(lambda: client.store.state(first.id) is RunState.RUNNING, 30, what="the first run to start")
    second = client.run(name)
    assert second.wait(30) is RunState.CANCELLED
    assert "and on_limit is cancel" in (second.record().reason or "")
    assert [line.text for line in second.follow(timeout=5)][0].startswith("envflow: cancelled: no free slot of")
    assert first.cancel() == "requested"


def test_a_waiting_run_does_not_block_other_deployments_on_its_queue(client, start_worker, hold):
    blocked = hold("blocked", concurrency_limit=1)
    client.set_limit(keys.deployment_limit(blocked), 0)
    free = hold("free")
    start_worker()  # one worker
    waiting = client.run(blocked)
    runs = [client.run(free, {"seconds": 0}) for _ in range(3)]
    assert [r.wait(30) for r in runs] == [RunState.COMPLETED] * 3
    assert client.store.get(waiting.id).waiting.message == "waiting for a slot of deployment hold/blocked (0 of 0)"
    listing = CliRunner().invoke(cli, ["run", "ls", "-d", blocked])
    assert "waiting for a slot of deployment hold/blocked" in listing.output
    inspected = CliRunner().invoke(cli, ["run", "inspect", waiting.id])
    assert "waiting for a slot of deployment hold/blocked (0 of 0)" in inspected.output
    described = CliRunner().invoke(cli, ["deployment", "inspect", blocked])
    assert re.search(r"concurrency limit +1\n", described.output)
    client.set_limit(keys.deployment_limit(blocked), 1)
    assert waiting.wait(30) is RunState.COMPLETED


@pytest.fixture
def durable_redis(tmp_path):
    (tmp_path / "aof").mkdir()
    server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    yield server
    server.stop()


def test_a_redis_restart_with_aof_keeps_slots_and_lines(durable_redis, settings):
    client = Client(settings=settings.model_copy(update={"redis_url": durable_redis.url}))
    _register(client, concurrency_limit=1)
    first, second = client.run("flow/dep").id, client.run("flow/dep").id
    held = _claim(client, first)
    assert isinstance(_claim(client, second), NotClaimed)
    before = client.limits()
    durable_redis.stop()
    durable_redis.start()
    assert client.limits() == before and before[0].holders == {first: 1} and before[0].waiting == 1
    _finish(client, first, held)
    assert _queued(client) == [second]
    assert isinstance(_claim(client, second), Claimed)
    assert client.limits()[0].holders == {second: 1}


def test_metrics_show_each_limit_without_run_ids(client):
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from envflow.ui.metrics import Metrics

    _register(client, concurrency_limit=1)
    first, second = client.run("flow/dep").id, client.run("flow/dep").id
    _claim(client, first)
    _claim(client, second)
    text = Metrics(client).scrape().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples if "limit" in s.name}
    label = (("limit", "deployment:flow/dep"),)
    assert samples == {("envflow_limit_slots", label): 1, ("envflow_limit_in_use", label): 1,
                       ("envflow_limit_waiting", label): 1}
    assert first not in text and second not in text


def test_a_delayed_retry_frees_the_slot_and_a_woken_run_returns_to_its_envs_queue(client, venv):
    client.set_limit("gpu", 1)
    _register(client, "flow/retry", tags=["gpu"], retries=1)
    routed = client.create_deployment(record("flow/venv").model_copy(update={
        "tags": ["gpu"], "env": EnvSpec.from_fields(virtualenv=str(venv))}))
    sub_queue = routing.rq_queue("default", routing.route_key(routed.env))
    first, second = client.run("flow/retry").id, client.run("flow/venv").id
    held = _claim(client, first)
    client.redis.lrem(keys.RQ_QUEUE_PREFIX + sub_queue, 1, second)
    assert isinstance(client.store.scripts.claim(second, "w1", "default").run(), NotClaimed)
    attempt = Attempt(n=held.attempt, worker="w1", started_at=held.started_at, ended_at=round(time.time(), 6),
                      state=RunState.FAILED.value)
    assert client.store.scripts.finish(first, Ending(attempt, RunState.SCHEDULED, scheduled_for=time.time() + 60)).run()
    assert client.limits()[0].holders == {}  # the attempt ended: its slot is free while the retry waits
    assert _queued(client, sub_queue) == [second]  # the job's origin: its env's sub-queue


def test_concurrency_limit_from_yaml_and_the_flow_runner(client, workdir):
    from envflow.deployment_files import load_file, record_and_files
    from envflow.deployments import DeploymentSpec
    from envflow.flow_runners import SubprocessFlowRunner

    write_flow(workdir, HOLD)
    (workdir / "deployments.yaml").write_text(
        "- name: capped\n  flow_location: flows.py\n  concurrency_limit: 2\n  on_limit: cancel\n  tags: [gpu]\n")
    [deployment] = load_file(workdir / "deployments.yaml").deployments
    stored = client.create_deployment(record_and_files(deployment, "default")[0])
    assert (stored.concurrency_limit, stored.on_limit) == (2, "cancel")
    assert [(i.name, i.slots) for i in client.limits()] == [("deployment:hold/capped", 2)]
    client.create_deployment(stored.model_copy(update={"concurrency_limit": None}), source=HOLD)
    assert client.limits() == []  # registered again without one: the deployment's limit is gone
    spec = DeploymentSpec(name="x", flow_location=str(workdir / "flows.py"),
                          flow_runner=SubprocessFlowRunner(concurrency_limit=3))
    assert spec.fields is not None and spec.fields.concurrency_limit == 3


def test_the_reaper_leaves_a_parked_runs_job_out_of_its_queue(client):
    quick = Client(settings=client.settings.model_copy(update={"lease_ttl": 0.2}))
    _register(quick, concurrency_limit=1)
    first, second = quick.run("flow/dep").id, quick.run("flow/dep").id
    assert isinstance(_claim(quick, first), Claimed)
    assert isinstance(_claim(quick, second), NotClaimed)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # long enough for a job that is truly stuck to be put back
        assert quick.store.reaper.rescue_pending() == []
        time.sleep(0.1)
    assert _queued(quick) == [] and quick.store.get(second).waiting
