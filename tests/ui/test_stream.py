"""A run's output as server-sent events: exactly the lines `--follow` gives, early, late and resumed."""

from __future__ import annotations

import threading

import pytest

from envflow.models import RunState
from envflow.store import keys

from ..support.flows import NO_WORKER_YET, deploy
from .helpers import Session, sse_events, sse_lines, wait_for


def follow_lines(run) -> list[tuple[str, str, int, int, bool]]:  # type: ignore[no-untyped-def]
    return [(line.stream, line.text, line.seq, line.attempt, line.partial) for line in run.follow(timeout=60)]


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_early_and_late_subscribers_get_the_lines_follow_gives(client, start_worker, flows_file, venv, ui):
    name = deploy(client, flows_file, "chatty", virtualenv=str(venv))
    run = client.run(name)
    path = f"/runs/{run.id}/events"
    early: list = []
    reader = threading.Thread(target=lambda: early.extend(sse_lines(sse_events(ui.base, path))))
    reader.start()
    channel = keys.output(run.id)
    # The early page is subscribed before any worker exists: it sees the whole run live.
    wait_for(lambda: client.redis.pubsub_numsub(channel)[0][1] == 1, "the stream's subscription")
    start_worker()
    reader.join(60)
    assert not reader.is_alive()
    assert run.wait(30) is RunState.COMPLETED

    late = sse_lines(sse_events(ui.base, path))
    followed = follow_lines(client.get_run(run.id))
    assert len(followed) == 10001 and followed[-1] == ("stdout", "no newline at the end", 10000, 1, True)
    assert early == followed
    assert late == followed


def test_a_reconnecting_page_resumes_after_its_last_event(client, start_worker, flows_file, venv, ui):
    name = deploy(client, flows_file, "chatty", virtualenv=str(venv))
    start_worker()
    run = client.run(name, {"n": 3000})
    assert run.wait(30) is RunState.COMPLETED
    events = list(sse_events(ui.base, f"/runs/{run.id}/events"))
    cut = len(events) // 2
    assert events[cut].name == "lines" and events[cut].id
    resumed = list(sse_events(ui.base, f"/runs/{run.id}/events", {"Last-Event-ID": events[cut].id}))
    assert [(e.name, e.data) for e in resumed] == [(e.name, e.data) for e in events[cut + 1:]]
    assert resumed[-1].name == "end" and resumed[-1].data == {"attempt": 1, "state": "COMPLETED", "final": True}
    # A Last-Event-ID that is no stream position (too big for one, or no number) replays from the start.
    for bad in (f"1-{10**30}-{10**30}", "9" * 5000 + "-1-2", "1-²-3", "-1-2-3"):
        again = list(sse_events(ui.base, f"/runs/{run.id}/events", {"Last-Event-ID": bad}, timeout=20))
        assert [(e.name, e.data) for e in again] == [(e.name, e.data) for e in events], bad[:40]
    assert "Traceback" not in ui.output()


def test_dropped_lines_are_marked_where_the_cli_marks_them(client, env_vars, start_worker, flows_file, venv, ui):
    name = deploy(client, flows_file, "chatty", virtualenv=str(venv))
    start_worker(extra_env={"ENVFLOW_HISTORY_MAX_LINES": "1000"})
    run = client.run(name, {"n": 5000})
    assert run.wait(30) is RunState.COMPLETED
    events = list(sse_events(ui.base, f"/runs/{run.id}/events"))
    assert events[0].name == "gap" and "earlier output was dropped from the history" in events[0].data["text"]
    lines = sse_lines(iter(events))
    assert lines == follow_lines(run) and len(lines) < 5001
    text = Session(ui.base).get(f"/runs/{run.id}/output.txt").text
    assert text.startswith("» earlier output was dropped from the history") and text.endswith("no newline at the end")
