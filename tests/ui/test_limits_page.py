"""The UI shows each limit's holders and waiting runs, and why a waiting run waits."""

from __future__ import annotations

import pytest

from envflow.store import keys

from ..support.flows import NO_WORKER_YET
from ..support.runs import record

pytestmark = pytest.mark.filterwarnings(NO_WORKER_YET)  # runs submitted before any worker, on purpose


def test_workers_page_lists_limits_and_run_page_says_why_it_waits(client, session):
    client.create_deployment(record("flow/dep").model_copy(update={"concurrency_limit": 1}))
    first, second = client.run("flow/dep").id, client.run("flow/dep").id
    for run_id in (first, second):
        client.redis.lrem(keys.RQ_QUEUE_PREFIX + "default", 1, run_id)
        client.store.scripts.claim(run_id, "w1", "default").run()
    page = session.get("/workers").text
    assert "deployment:flow/dep" in page and f"/runs/{first}" in page
    run_page = session.get(f"/runs/{second}").text
    assert f"waiting for a slot of deployment flow/dep (1 of 1, held by run {first[:8]})" in run_page
