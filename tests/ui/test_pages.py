"""The UI's pages and actions over HTTP, against a real Redis, real workers and a real `envflow ui`."""

from __future__ import annotations

import json
import re
import time

import pytest

from envflow.models import RunState

from ..support.flows import NO_WORKER_YET, deploy
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



def test_every_state_has_its_look_in_the_page_css_and_the_strip(session):
    from envflow.states import LOOKS, RunState

    css = session.get("/static/states.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    for state in RunState:
        assert f".state-{state.value.lower()} {{ background: {LOOKS[state].colour}; }}" in css.text
    page = session.get("/runs")
    assert 'data-final-states="CANCELLED COMPLETED CRASHED FAILED TIMED_OUT"' in page.text
    assert "/static/states.css" in page.text
    assert len({look.colour for look in LOOKS.values()}) == len(RunState)  # told apart by colour, and by name


def test_a_deployments_page_says_who_can_run_it_and_how_long_its_runs_take(client, start_worker, flows_file, venv,
                                                                           session):
    from envflow.schedules import Interval

    name = deploy(client, flows_file, "hello", virtualenv=str(venv), schedule=Interval(hours=1))
    page = session.get(f"/deployments/{name}")
    assert "none of the queue's live workers can run it now" in page.text and "no ended run yet" in page.text
    assert re.search(r'name="p:times" value=""\s+placeholder="1"', page.text)  # the flow's default, not "flow default"
    assert "Next runs" in page.text and "paused:" not in page.text
    worker = start_worker()
    for _ in range(3):
        assert client.run(name).wait(30) is RunState.COMPLETED
    workers = client.capable_workers(client.get_deployment(name))
    page = wait_for(lambda: (p := session.get(f"/deployments/{name}")) and workers[0] in p.text and p,
                    "the worker on the page")
    assert re.search(r"3 ended: p50 [\d.]+(ms|s), p95 [\d.]+(ms|s)", page.text), page.text
    client.pause_deployment(name)
    paused = session.get(f"/deployments/{name}").text
    assert "paused: no scheduled runs until it is resumed" in paused
    assert not re.search(r"Next runs</th><td><div>", paused)
    worker.stop()


def test_runs_filter_by_tag_queue_worker_and_time_and_page_by_cursor(client, session):
    from envflow.models import DeploymentRecord

    from ..support.runs import drive, record

    gpu = client.create_deployment(record("train/gpu").model_copy(update={"tags": ["gpu"], "queue": "big"}))
    cpu = client.create_deployment(record("train/cpu"))
    assert isinstance(gpu, DeploymentRecord)
    made = {}
    for i in range(7):
        deployment = gpu if i % 2 else cpu
        run_id = client.store.create(deployment, {})
        drive(client, run_id, worker="w-a" if i < 4 else "w-b")
        made[i] = run_id
    newest = [made[i] for i in reversed(range(7))]
    assert run_ids(session.get("/runs?tag=gpu").text) == [made[5], made[3], made[1]]
    assert run_ids(session.get("/runs?queue=big").text) == [made[5], made[3], made[1]]
    assert run_ids(session.get("/runs?worker=w-b").text) == [made[6], made[5], made[4]]
    assert run_ids(session.get("/runs?worker=w-b&tag=gpu").text) == [made[5]]
    assert run_ids(session.get("/runs?since=1h").text) == newest
    client.redis.zadd("envflow:runs:state:COMPLETED", {made[0]: 1.0})  # created long ago, as the index says
    assert made[0] not in run_ids(session.get("/runs?since=7d").text)

    # Pages of 3, Next then Previous, each URL reopened giving the same rows.
    first = session.get("/runs?limit=3")
    assert run_ids(first.text) == newest[:3] and 'rel="prev"' not in first.text
    link = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = session.get(link)
    assert run_ids(second.text)[:3] == newest[3:6]
    assert run_ids(session.get(link).text) == run_ids(second.text)  # the URL is the view
    back = re.search(r'rel="prev" href="([^"]+)"', second.text).group(1).replace("&amp;", "&")
    assert run_ids(session.get(back).text) == newest[:3]
    bad = session.get("/runs?cursor=nonsense")
    assert bad.status == 200 and "invalid listing cursor" in bad.text


def test_rerun_with_the_same_parameters_or_with_changes(client, flows_file, venv, session):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv), parameters={"name": "ada"})
    first = client.run(name, {"name": "bob", "times": 3}, timeout=90)
    page = session.get(f"/runs/{first.id}")
    assert f'action="/runs/{first.id}/rerun"' in page.text
    reply = session.post(f"/runs/{first.id}/rerun")
    assert reply.status == 303 and reply.location != f"/runs/{first.id}"
    again = client.get_run(reply.location.rsplit("/", 1)[1]).record()
    assert again.deployment == name and again.parameters == {"name": "bob", "times": 3}
    form = session.get(f"/deployments/{name}?from={first.id}").text
    assert 'name="p:name" value="bob"' in form and 'name="p:times" value="3"' in form
    assert 'name="timeout" value="90"' in form


def test_a_stored_deployment_that_does_not_validate_breaks_no_page(client, flows_file, venv, session):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv))
    client.run(name)
    raw = json.loads(client.redis.get(f"envflow:deployment:{name}"))
    client.redis.set("envflow:deployment:hello/broken", json.dumps({**raw, "name": "hello/broken", "retry_delay": [None]}))
    client.redis.zadd("envflow:deployments", {"hello/broken": 0})
    for path in ("/runs", "/deployments"):
        page = session.get(path)
        assert page.status == 200 and name in page.text and "hello/broken" not in page.text, path
    broken = session.get("/deployments/hello/broken")
    assert broken.status in (400, 409) and "delete it" in broken.text, broken.status


def test_a_run_page_says_which_runs_hook_started_it_that_it_is_late_and_its_deliveries(client, session):
    from envflow.store.hooks import hook_store

    from ..support.runs import register

    record = register(client).model_copy(update={"late_after": 0.01})
    origin = client.store.create(record, {})
    started = client.store.create(record, {}, started_by=f"{origin}:COMPLETED")
    assert client.store.scripts.late(started).run()
    page = session.get(f"/runs/{started}")
    assert f'<a href="/runs/{origin}">run {origin[:8]}</a>\'s COMPLETED hook' in page.text.replace("&#39;", "'")
    assert "not started" in page.text
    store = hook_store(client.redis, client.settings)
    store.create("1-0.d0", {"run": started, "state": "LATE", "kind": "webhook", "target": "https://u:pw@h.example/x"})
    store.record_try("1-0.d0", "500", "HTTP 500", "pending", time.time() + 60)
    page = session.get(f"/runs/{started}")
    assert "https://u:***@h.example/x" in page.text and "pw@" not in page.text
    assert "pending" in page.text and "1-0.d0" in page.text and "HTTP 500" in page.text


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
