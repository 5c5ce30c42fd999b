"""`/metrics` parses with prometheus_client's own parser, and its figures are the runs made."""

from __future__ import annotations

import warnings

import pytest
from prometheus_client.parser import text_string_to_metric_families

from envflow.errors import EnvflowWarning
from envflow.models import RunState

from ..support.flows import NO_WORKER_YET, deploy
from .helpers import Session, wait_for


def scrape(session: Session) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = session.get("/metrics", headers={"Accept": "text/plain"})
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_metrics_count_the_runs_made(client, start_worker, flows_file, venv, session):
    hello = deploy(client, flows_file, "hello", virtualenv=str(venv))
    ticker = deploy(client, flows_file, "ticker", virtualenv=str(venv), queue="slow")
    assert scrape(session)[("envflow_runs_running", ())] == 0
    cancelled = client.run(hello)
    client.cancel(cancelled.id)  # before any worker: it never starts
    start_worker()
    runs = [client.run(hello), client.run(hello, {"name": "fail"}), client.run(hello, {"times": 3})]
    assert [r.wait(30) for r in runs] == [RunState.COMPLETED, RunState.FAILED, RunState.COMPLETED]
    client.pause_queue("slow")
    tickers = [client.run(ticker) for _ in range(2)]

    m = scrape(session)
    total = {labels: v for (name, labels), v in m.items() if name == "envflow_runs_total"}
    assert total == {
        (("deployment", hello), ("state", "COMPLETED")): 2,
        (("deployment", hello), ("state", "FAILED")): 1,
        (("deployment", hello), ("state", "CANCELLED")): 1,
    }
    assert m[("envflow_run_duration_seconds_count", (("deployment", hello),))] == 3  # the cancelled one never ran
    assert m[("envflow_dispatch_seconds_count", ())] == 3
    assert m[("envflow_dispatch_seconds_bucket", (("le", "+Inf"),))] == 3
    assert m[("envflow_queue_depth", (("queue", "slow"),))] == 2
    assert m[("envflow_queue_depth", (("queue", "default"),))] == 0
    assert m[("envflow_workers", (("queue", "default"),))] == 1
    assert m[("envflow_workers", (("queue", "slow"),))] == 0
    assert m[("envflow_runs_running", ())] == 0
    assert not any(name.endswith("_created") for name, _ in m)
    # No label holds a run id: the series stay as many as deployments x states.
    assert not any(v for _, labels in m for k, v in labels if len(v) == 32 and k != "le")

    # A scrape counts each run once, however often it sees it.
    assert scrape(session) == m

    start_worker("--queue", "slow")
    client.resume_queue("slow")
    wait_for(lambda: scrape(session)[("envflow_runs_running", ())] == 1, "a ticker run to be running")
    m = scrape(session)
    assert m[("envflow_queue_depth", (("queue", "slow"),))] == 1
    assert m[("envflow_workers", (("queue", "slow"),))] == 1
    assert m[("envflow_dispatch_seconds_count", ())] == 4
    assert ("envflow_runs_total", (("deployment", ticker), ("state", "COMPLETED"))) not in m
    for run in tickers:
        client.cancel(run.id)
    assert [r.wait(30) for r in tickers] == [RunState.CANCELLED, RunState.CANCELLED]
    total = {labels: v for (name, labels), v in scrape(session).items() if name == "envflow_runs_total"}
    assert total[(("deployment", ticker), ("state", "CANCELLED"))] == 2


def commands_during(client, action) -> int:  # type: ignore[no-untyped-def]
    """How many commands Redis executed while ``action`` ran (INFO commandstats)."""
    client.redis.config_resetstat()
    action()
    stats = client.redis.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


def test_a_scrape_costs_the_same_whatever_the_backlog(client, flows_file, venv, session):
    hello = deploy(client, flows_file, "hello", virtualenv=str(venv))
    scrape(session)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnvflowWarning)  # no worker: they all wait, and each says so
        backlog = [client.run(hello).id for _ in range(2000)]
    scrape(session)  # takes them
    idle = commands_during(client, lambda: scrape(session))
    assert idle < 200, f"{idle} commands for one scrape with 2,000 runs waiting"
    for run_id in backlog[5::400]:  # five runs end while they wait, spread over the backlog
        client.cancel(run_id)
    figures: dict = {}
    busy = commands_during(client, lambda: figures.update(scrape(session)))
    assert busy < 600, f"{busy} commands for a scrape that finds 5 of 2,000 waiting runs ended"
    assert figures[("envflow_runs_total", (("deployment", hello), ("state", "CANCELLED")))] == 5
    assert scrape(session)[("envflow_runs_total", (("deployment", hello), ("state", "CANCELLED")))] == 5
