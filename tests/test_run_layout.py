"""What a run leaves in Redis: a compact record, a packed history, shared deployment snapshots."""

from __future__ import annotations

import json
import threading
import time

import pytest

from envflow.models import RunState
from envflow.output import AttemptEnd, Entry
from envflow.store import keys
from envflow.store.packing import PACK_MAX_ENTRIES
from envflow.store.protocol import Claimed
from envflow.store.runs import FAILED_JOB_TTL

from .support.flows import NO_WORKER_YET, deploy, write_flow
from .support.processes import wait_until
from .support.runs import claim, drive, register

FLOWS = """
    from envflow import flow

    @flow
    def hello():
        print("hello world")

    @flow
    def boom():
        raise ValueError("boom")
"""


def test_a_finished_short_run_is_one_compact_hash_and_a_packed_history(client):
    deployment = register(client)
    run_id = client.store.create(deployment, {"n": 3})
    drive(client, run_id, ["hello world", "second line"])
    r = client.redis
    assert r.object("encoding", keys.run(run_id)) == b"listpack"
    assert not r.exists(keys.output(run_id))
    assert 0 < r.ttl(keys.packed_output(run_id)) <= client.settings.history_ttl
    assert 0 < r.ttl(keys.run(run_id)) <= client.settings.run_ttl
    record = client.store.get(run_id)
    assert record.id == run_id and record.parameters == {"n": 3} and record.state is RunState.COMPLETED
    assert [t[0] for t in record.transitions] == ["PENDING", "RUNNING", "COMPLETED"]
    assert record.transitions[0][1] == record.created_at and record.updated_at == record.transitions[-1][1]
    assert record.attempts[0].state == "COMPLETED" and record.attempts[0].worker == "w1"
    assert record.attempts[0].start == "new" and record.attempts[0].error is None
    assert record.attempts[0].started_at == record.entered(RunState.RUNNING)
    assert record.exit_code == 0 and record.has_result and record.result is None
    records = list(client.get_run(run_id).records(timeout=5))
    assert [(type(x).__name__, getattr(x, "data", None)) for x in records] == [
        ("Entry", "hello world"), ("Entry", "second line"), ("AttemptEnd", None)]
    assert records[-1].final and records[-1].state == "COMPLETED"


def test_early_and_late_followers_agree_when_the_history_is_packed(client):
    deployment = register(client)
    run_id = client.store.create(deployment, {})
    early: list = []
    follower = threading.Thread(target=lambda: early.extend(client.get_run(run_id).records(timeout=20)))
    follower.start()
    time.sleep(0.3)
    drive(client, run_id, [f"line {i}" for i in range(10)])
    follower.join(20)
    late = list(client.get_run(run_id).records(timeout=5))
    assert early == late and isinstance(late[-1], AttemptEnd) and late[-1].final
    assert sum(len(e.lines()) for e in late if isinstance(e, Entry)) == 10


def test_a_long_history_keeps_its_stream(client):
    deployment = register(client)
    run_id = client.store.create(deployment, {})
    drive(client, run_id, [f"line {i}" for i in range(PACK_MAX_ENTRIES + 5)])
    assert client.redis.exists(keys.output(run_id)) and not client.redis.exists(keys.packed_output(run_id))
    lines = [line.text for line in client.get_run(run_id).follow(timeout=5)]
    assert lines == [f"line {i}" for i in range(PACK_MAX_ENTRIES + 5)]


def test_runs_of_one_deployment_version_share_its_snapshot(client):
    deployment = register(client)
    first, second = (client.store.create(deployment, {}) for _ in range(2))
    refs = {json.loads(client.redis.hget(keys.run(i), "spec"))["ref"] for i in (first, second)}
    assert len(refs) == 1 and client.redis.exists(keys.spec(refs.pop()))
    claimed = claim(client, first)
    assert claimed.deployment == deployment


def test_a_run_whose_snapshot_expired_fails_when_claimed(client):
    deployment = register(client)
    run_id = client.store.create(deployment, {})
    client.redis.delete(keys.spec(json.loads(client.redis.hget(keys.run(run_id), "spec"))["ref"]))
    outcome = client.store.scripts.claim(run_id, "w1", "default").run()
    assert not isinstance(outcome, Claimed) and (outcome.status, outcome.detail) == ("ended", "FAILED")
    record = client.store.get(run_id)
    assert record.state is RunState.FAILED and "ENVFLOW_RUN_TTL" in record.error
    assert client.get_run(run_id).wait(5) is RunState.FAILED


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_rq_keeps_a_completed_runs_job_no_longer_than_it_needs_it(client, start_worker, venv, workdir):
    path = write_flow(workdir, FLOWS)
    hello, boom = (deploy(client, path, flow, virtualenv=str(venv)) for flow in ("hello", "boom"))
    pending = client.run(hello)
    fields = client.redis.hgetall(f"rq:job:{pending.id}")
    assert b"" not in fields.values() and len(fields) <= 8  # a job hash's table stays at 8 slots
    start_worker()
    assert pending.wait(30) is RunState.COMPLETED
    failed = client.run(boom)
    assert failed.wait(30) is RunState.FAILED
    assert not client.redis.exists(f"rq:job:{pending.id}")
    origin = client.redis.hget(f"rq:job:{failed.id}", "origin").decode()  # its env's sub-queue of default
    # RQ's failure handling follows the run's end record: wait for it (bounded)
    wait_until(lambda: client.redis.zscore(f"rq:failed:{origin}", failed.id) is not None, 10, what="RQ's failure record")
    assert 0 < client.redis.ttl(f"rq:job:{failed.id}") <= FAILED_JOB_TTL
    assert [line.text for line in pending.follow(timeout=5)] == ["hello world"]


def test_a_run_cancelled_before_it_started_leaves_no_job_in_rq(client):
    run_id = client.store.create(register(client), {})
    assert client.cancel(run_id) == "cancelled"
    assert not client.redis.exists(f"rq:job:{run_id}") and client.store.queue("default").count == 0
    assert not [k for k in client.redis.keys("rq:*") if client.redis.type(k) == b"zset" and client.redis.zcard(k)]
    assert client.get_run(run_id).wait(5) is RunState.CANCELLED
