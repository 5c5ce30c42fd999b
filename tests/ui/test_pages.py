"""The UI's pages and actions over HTTP, against a real Redis, real workers and a real `envflow ui`."""

from __future__ import annotations

import re

import pytest

from envflow.models import RunState

from ..conftest import NO_WORKER_YET, deploy
from .helpers import wait_for

RUN_LINK = re.compile(r'href="/runs/([0-9a-f]{32})"')


def run_ids(html: str) -> list[str]:
    return list(dict.fromkeys(RUN_LINK.findall(html)))


def test_every_page_renders(client, start_worker, flows_file, venv, session):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv), parameters={"name": "ada"}, tags=["t1"])
    worker = start_worker()
    run = client.run(name)
    assert run.wait(30) is RunState.COMPLETED

    runs = session.get("/runs")
    assert runs.status == 200 and run.id in runs.text and "COMPLETED" in runs.text
    assert f"venv:{venv}" in runs.text  # the env the run was made for
    page = session.get(f"/runs/{run.id}")
    assert page.status == 200
    for text in ("PENDING", "RUNNING", "COMPLETED", "&#34;ada&#34;", f'data-events="/runs/{run.id}/events"'):
        assert text in page.text
    assert session.get(f"/runs/{run.id[:8]}").location == f"/runs/{run.id}"  # a prefix finds the run
    assert session.get(f"/runs/{run.id}/output.txt").text == "hello ada\nto stderr\n"
    deployments = session.get("/deployments")
    assert deployments.status == 200 and name in deployments.text and "<svg" in deployments.text
    assert f'href="/runs/{run.id}"' in deployments.text  # the strip links each run
    detail = session.get(f"/deployments/{name}")
    assert detail.status == 200 and 'name="p:name" value="ada"' in detail.text and 'name="p:times"' in detail.text
    workers = session.get("/workers")
    assert workers.status == 200 and "default" in workers.text
    assert wait_for(lambda: worker_name(worker) in session.get("/workers").text, "the worker on the Workers page")
    assert session.get("/runs/0123abcd").status == 404
    assert session.get("/deployments/no/such").status == 404
    assert session.get("/healthz").text == "ok\n"


def worker_name(worker) -> str:  # type: ignore[no-untyped-def]
    match = re.search(r"worker (\S+) ready on queue", worker.output())
    assert match, worker.output()
    return match.group(1)


def test_filters_by_state_and_deployment(client, start_worker, flows_file, venv, session):
    hello = deploy(client, flows_file, "hello", virtualenv=str(venv))
    other = deploy(client, flows_file, "hello", name="other", virtualenv=str(venv))
    start_worker()
    ok = client.run(hello)
    failed = client.run(hello, {"name": "fail"})
    elsewhere = client.run(other)
    for run in (ok, failed, elsewhere):
        run.wait(30)

    assert set(run_ids(session.get("/runs").text)) == {ok.id, failed.id, elsewhere.id}
    assert run_ids(session.get("/runs?state=FAILED").text) == [failed.id]
    assert run_ids(session.get("/runs?state=completed").text) == [elsewhere.id, ok.id]  # newest first
    assert set(run_ids(session.get(f"/runs?deployment={hello}").text)) == {ok.id, failed.id}
    assert run_ids(session.get(f"/runs?deployment={hello}&state=COMPLETED").text) == [ok.id]
    assert run_ids(session.get("/runs?limit=1").text) == [elsewhere.id]
    assert run_ids(session.get(f"/runs/rows?deployment={other}").text) == [elsewhere.id]  # the self-updating part
    missing = session.get("/runs?deployment=nope/none")
    assert missing.status == 200 and "no deployment &#39;nope/none&#39;" in missing.text and not run_ids(missing.text)


def test_run_form_validates_as_the_client_and_opens_the_run(client, start_worker, flows_file, venv, session):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv))
    path = f"/deployments/{name}/run"

    bad = session.post(path, {"p:times": "three"})
    assert bad.status == 400 and "expects int" in bad.text and 'value="three"' in bad.text  # the form comes back
    unknown = session.post(path, {"params_json": '{"colour": "red"}'})
    assert unknown.status == 400 and "has no parameter colour" in unknown.text
    assert session.post(path, {"timeout": "-1"}).status == 400
    assert not client.runs(name)  # nothing was queued

    started = session.post(path, {"p:name": "grace", "p:times": "2", "timeout": "60"})
    assert started.status == 303 and started.location.startswith("/runs/")
    run = client.get_run(started.location.rsplit("/", 1)[1])
    record = run.record()
    assert record.parameters == {"name": "grace", "times": 2} and record.timeout == 60  # "2" became 2 for int
    start_worker()
    assert run.wait(30) is RunState.COMPLETED
    assert [line.text for line in run.follow()] == ["hello grace", "hello grace", "to stderr"]


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_cancel_from_the_page(client, start_worker, flows_file, venv, session):
    name = deploy(client, flows_file, "ticker", virtualenv=str(venv))
    queued = client.run(name)
    assert 'action="/runs/' + queued.id + '/cancel"' in session.get(f"/runs/{queued.id}").text
    reply = session.post(f"/runs/{queued.id}/cancel")
    assert reply.status == 303 and reply.location == f"/runs/{queued.id}"
    assert queued.state is RunState.CANCELLED

    start_worker()
    running = client.run(name)
    wait_for(lambda: running.state is RunState.RUNNING, "the run to start")
    # The page's script sends the token in a header; the form sends it as a field.
    token = session.csrf(f"/runs/{running.id}")
    assert session.request("POST", f"/runs/{running.id}/cancel", headers={"X-CSRF-Token": token}).status == 303
    assert running.wait(30) is RunState.CANCELLED
    assert "Cancel run" not in session.get(f"/runs/{running.id}").text


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_pause_and_resume(client, flows_file, venv, session):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv))
    assert session.post(f"/deployments/{name}/pause", {"next": f"/deployments/{name}"}).location == f"/deployments/{name}"
    assert client.paused_deployments() == {name}
    assert "paused" in session.get("/deployments").text
    assert session.post(f"/deployments/{name}/resume", {"next": "https://elsewhere.example/"}).location == "/deployments"
    assert client.paused_deployments() == set()
    client.run(name)  # the queue exists once a run is on it
    assert session.post("/queues/default/pause").location == "/workers"
    assert client.queues()[0]["paused"]
    session.post("/queues/default/resume")
    assert not client.queues()[0]["paused"]


def test_workers_page_shows_each_workers_warm_processes(client, start_worker, flows_file, venv, session):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv), warm=True)
    worker = start_worker()
    assert client.run(name).wait(30) is RunState.COMPLETED

    def warm_row() -> str:
        page = session.get("/workers").text
        row = next((r for r in page.split("<tr>") if worker_name(worker) in r), "")
        return row if f"venv:{venv}</span>" in row and " fork, " in row else ""

    row = wait_for(warm_row, "the worker's ready process on the Workers page")
    assert re.search(r"fork, \d+ MiB", row)


def test_form_values_go_back_unchanged(client, start_worker, flows_file, venv, session):
    """A deployment value with a newline keeps it through the form: an unchanged field changes nothing."""
    name = deploy(client, flows_file, "hello", virtualenv=str(venv), parameters={"name": "two\nlines"})
    page = session.get(f"/deployments/{name}").text
    assert '<textarea name="p:name" rows="3">two\nlines</textarea>' in page
    started = session.post(f"/deployments/{name}/run", {"p:name": "two\nlines"})
    assert client.get_run(started.location.rsplit("/", 1)[1]).record().parameters == {"name": "two\nlines"}
    bad = session.post(f"/deployments/{name}/run", {"p:name": "<b>\n", "p:times": "x"})
    assert bad.status == 400 and '<textarea name="p:name" rows="3">&lt;b&gt;\n</textarea>' in bad.text
    assert 'name="p:times" value="x"' in bad.text


def test_a_waiting_run_says_why_on_its_page_in_the_list_and_in_its_stream(client, flows_file, venv, session, ui):
    from envflow.errors import EnvflowWarning

    from .helpers import sse_events

    name = deploy(client, flows_file, "hello", virtualenv=str(venv), parameters={"name": "ada"})
    with pytest.warns(EnvflowWarning, match="no live worker on queue default"):
        run = client.run(name)
    page = session.get(f"/runs/{run.id}")
    assert "Waiting" in page.text and "waiting: no live worker on queue default" in page.text
    assert "waiting: no live worker on queue default" in session.get("/runs").text
    events = sse_events(ui.base, f"/runs/{run.id}/events", timeout=5)
    first = next(events)
    assert first.name == "waiting" and first.data == {"kind": "no-worker",
                                                      "text": "waiting: no live worker on queue default"}
    events.close()
    run.cancel()
