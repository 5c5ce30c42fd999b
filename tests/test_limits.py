"""Concurrency limits: slots taken by the claim, freed by the end of the attempt, handed to the run in line.

The first tests drive the run protocol directly (as a worker would); the rest run real workers.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from envflow.cli.main import cli
from envflow.models import RunState
from envflow.store import keys
from envflow.store.protocol import Claimed, NotClaimed

from .helpers_runs import record


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
    import time

    from envflow.models import Attempt
    from envflow.store.protocol import Ending

    attempt = Attempt(n=claimed.attempt, worker="w1", started_at=claimed.started_at, ended_at=round(time.time(), 6),
                      state=state.value)
    assert client.store.scripts.finish(run_id, Ending(attempt, state)).run()


def test_a_full_limit_parks_the_run_and_the_end_of_the_holder_wakes_it(client):
    _register(client, concurrency_limit=1)
    first, second = client.run("flow/dep").id, client.run("flow/dep").id
    held = _claim(client, first)
    assert isinstance(held, Claimed)
    parked = _claim(client, second)
    assert parked == NotClaimed("limited", f"waiting for a slot of deployment flow/dep (1 of 1, held by run {first[:8]})")
    assert _queued(client) == []  # parked: out of the queue, not polling
    waiting = client.store.get(second)
    assert waiting.state is RunState.PENDING and waiting.waiting == parked.detail
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
