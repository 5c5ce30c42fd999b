"""Listings read the state indexes: filters, paging, prefixes; the indexes follow every state change
and shrink back as runs expire."""

from __future__ import annotations

import time

import pytest

from envflow.errors import EnvflowError, RunNotFound
from envflow.models import RunState
from envflow.store import keys
from envflow.store.queries import Queries

from .support.runs import drive, register


def index_sizes(client) -> dict[str, int]:
    names = [k.decode() for k in client.redis.scan_iter(match=keys.STATE_INDEX_PREFIX + "*")]
    return {name: client.redis.zcard(name) for name in names}


@pytest.fixture
def runs(client):
    """12 runs of a/x and 6 of b/y, oldest first; some completed, some failed, the rest pending."""
    a, b = register(client, "a/x"), register(client, "b/y")
    made = []
    for i in range(18):
        run_id = client.store.create(a if i % 3 else b, {})
        made.append(run_id)
        if i % 4 == 0:
            drive(client, run_id)
        elif i % 4 == 1:
            drive(client, run_id, state=RunState.FAILED)
    return made


def test_filters_read_the_index_of_each_state(client, runs):
    q = Queries(client.redis)
    newest_first = list(reversed(runs))
    assert [r.id for r in q.runs(limit=100).runs] == newest_first
    records = {run_id: client.store.get(run_id) for run_id in runs}
    for state in (RunState.COMPLETED, RunState.FAILED, RunState.PENDING):
        for deployment in (None, "a/x", "b/y"):
            expected = [i for i in newest_first
                        if records[i].state is state and deployment in (None, records[i].deployment)]
            page = q.runs(deployment, state, limit=100)
            assert [r.id for r in page.runs] == expected and page.cursor is None
            assert all(r.state is state for r in page.runs)
            assert q.count(deployment, state) == len(expected)
    assert [r.id for r in client.runs("a/x", "FAILED", limit=3)] == [
        i for i in newest_first if records[i].deployment == "a/x" and records[i].state is RunState.FAILED][:3]


def test_pages_follow_each_other_newest_first(client, runs):
    q = Queries(client.redis)
    seen, cursor = [], None
    for _ in range(10):
        page = q.runs(deployment="a/x", limit=5, cursor=cursor)
        seen += [r.id for r in page.runs]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == [i for i in reversed(runs) if client.store.get(i).deployment == "a/x"]
    with pytest.raises(EnvflowError, match="cursor"):
        q.runs(cursor="nonsense")


def test_a_listing_row_says_what_the_table_shows(client, runs):
    row = Queries(client.redis).runs(state=RunState.COMPLETED, limit=1).runs[0]
    record = client.store.get(row.id)
    assert (row.deployment, row.state, row.attempt, row.worker) == (record.deployment, record.state, 1, "w1")
    assert (row.created_at, row.updated_at, row.started_at) == (
        record.created_at, record.updated_at, record.entered(RunState.RUNNING))


def test_run_ids_resolve_from_a_prefix_in_any_state(client, runs):
    q = Queries(client.redis)
    for run_id in (runs[0], runs[1], runs[2]):
        assert q.resolve_id(run_id[:10]) == run_id
    with pytest.raises(RunNotFound):
        q.resolve_id("ffff" + "0" * 28)


def test_expired_runs_leave_the_indexes(client):
    deployment = register(client)
    start = index_sizes(client)
    made = [client.store.create(deployment, {}) for _ in range(5)]
    for run_id in made[:4]:
        drive(client, run_id)
    client.store.cancel(made[4])
    assert sum(index_sizes(client).values()) == 10
    for run_id in made:  # their retention is over
        client.redis.delete(keys.run(run_id))
    maintenance = client.store.reaper.indexes
    assert maintenance.trim(now=time.time() + client.settings.run_ttl + 1) == 10
    assert index_sizes(client) == start
    assert not client.redis.exists(keys.INDEXED_DEPLOYMENTS)


def test_the_trim_keeps_runs_whose_record_is_still_there(client):
    deployment = register(client)
    run_id = client.store.create(deployment, {})
    drive(client, run_id)
    assert client.store.reaper.indexes.trim(now=time.time() + client.settings.run_ttl + 1) == 0
    assert [r.id for r in client.runs()] == [run_id]


def test_stats_tell_where_the_memory_goes(client, runs, env_vars):
    import json
    import os
    import subprocess

    from .support.processes import envflow_command

    done = subprocess.run(envflow_command("stats", "--json"), env={**os.environ, **env_vars}, capture_output=True,
                          text=True, timeout=60, check=True)
    found = json.loads(done.stdout)
    kinds = {k["name"]: k for k in found["kinds"]}
    assert set(kinds) == {"runs", "output", "indexes", "queues", "deployments"}
    assert kinds["runs"]["items"] == len(runs) and kinds["runs"]["bytes"] > 0
    assert kinds["output"]["items"] == 10  # the finished runs (packed), not the pending ones
    # no worker took their jobs off the queue (the runs were driven through the scripts)
    assert kinds["queues"]["items"] == len(runs) and kinds["deployments"]["items"] == 2
    assert found["used_memory"] >= sum(k["bytes"] for k in kinds.values())


def test_an_index_that_shrank_is_rebuilt_small(client):
    deployment = register(client)
    run_id = client.store.create(deployment, {})
    drive(client, run_id)
    key = keys.state_index("COMPLETED")
    client.redis.zadd(key, {f"{i:032x}": 1000.0 + i for i in range(20_000)})  # runs whose records expired
    assert client.redis.object("encoding", key) == b"skiplist"
    assert client.store.reaper.indexes.trim(now=time.time() + client.settings.run_ttl + 1) == 20_000
    assert client.redis.object("encoding", key) == b"listpack" and client.redis.zrange(key, 0, -1) == [run_id.encode()]
    assert client.redis.zscore(key, run_id) == float(client.redis.hget(keys.run(run_id), "created_at"))


def test_rq_key_names_envflow_reads_are_rqs_own():
    from rq.job import Job
    from rq.queue import Queue
    from rq.registry import (
        CanceledJobRegistry,
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        ScheduledJobRegistry,
        StartedJobRegistry,
    )
    from rq.worker import Worker
    from rq.worker_registration import WORKERS_BY_QUEUE_KEY

    from envflow.store import keys

    assert keys.RQ_QUEUES == Queue.redis_queues_keys
    assert keys.RQ_QUEUE_PREFIX == Queue.redis_queue_namespace_prefix
    assert keys.RQ_WORKER_PREFIX == Worker.redis_worker_namespace_prefix
    assert keys.RQ_JOB_PREFIX == Job.redis_job_namespace_prefix
    assert keys.rq_workers("q") == WORKERS_BY_QUEUE_KEY % "q"
    registries = (ScheduledJobRegistry, StartedJobRegistry, FailedJobRegistry, FinishedJobRegistry,
                  DeferredJobRegistry, CanceledJobRegistry)
    assert [keys.rq_registry(kind, "q") for kind in keys.RQ_REGISTRIES] == [r.key_template.format("q") for r in registries]
