"""Run hooks: their validation, the outbox the transition scripts write, delivery (signed webhooks with
retries, handed on when a deliverer dies), run hooks started once, and LATE events. Against a real
redis-server, real workers and a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from envflow.deployment_files import load_file
from envflow.deployments import Deployment
from envflow.errors import ConfigError
from envflow.flow_runners import SubprocessFlowRunner
from envflow.hook_spec import Hook, hooked_events
from envflow.models import RunState

from .support.flows import deploy, write_flow
from .support.processes import WorkerProcess, envflow_command

FLOW = "from envflow import flow\n\n@flow\ndef boom():\n    raise RuntimeError('no')\n"


def test_yaml_hooks_take_on_as_written_and_errors_are_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text(FLOW)
    (tmp_path / "d.yaml").write_text(textwrap.dedent("""\
        - name: good
          flow_location: f.py
          late_after: 30
          hooks:
            - on: [FAILED, crashed]
              webhook: https://user:pw@hooks.example/x
            - on: [COMPLETED]
              run: other/nightly
              parameters: {source: warehouse}
        - name: bad
          flow_location: f.py
          hooks:
            - on: [FAILED, EXPLODED]
              webhook: ftp://hooks.example/x
            - on: [LATE]
              webhook: http://a.example
              run: other/nightly
    """))
    loaded = load_file(tmp_path / "d.yaml")
    (good,) = loaded.deployments
    assert good.fields is not None and good.fields.late_after == 30
    assert [h.on for h in good.fields.hooks] == [["FAILED", "CRASHED"], ["COMPLETED"]]
    assert good.fields.hooks[1].parameters == {"source": "warehouse"}
    assert hooked_events(good.fields.hooks) == "|COMPLETED|CRASHED|FAILED|"
    errors = "\n".join(loaded.errors).splitlines()
    assert len(errors) == 3, errors
    assert "hooks.0.on" in errors[0] and "'EXPLODED' is not an event" in errors[0]
    assert "hooks.0.webhook" in errors[1] and "http:// or https://" in errors[1]
    assert "hooks.1" in errors[2] and "one action" in errors[2]


def test_python_and_flow_runner_hooks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="late_after"):
        Deployment(name="x", flow_location="f.py", late_after=0)
    with pytest.raises(ConfigError, match="only site-wide hooks"):
        Deployment(name="x", flow_location="f.py", hooks=[{"on": ["FAILED"], "webhook": "http://a", "tags": ["t"]}])
    with pytest.raises(ConfigError, match="is not an event"):
        Deployment(name="x", flow_location="f.py", hooks=[{"on": "RUNNING", "webhook": "http://a"}])
    runner = SubprocessFlowRunner(hooks=[Hook(on=["TIMED_OUT"], webhook="http://a.example/h")], late_after=5)
    d = Deployment(name="x", flow_location="f.py", **runner.deployment_fields())
    assert d.fields is not None and d.fields.hooks[0].on == ["TIMED_OUT"] and d.fields.late_after == 5
    assert Hook.model_validate({True: "FAILED,completed", "webhook": "http://a"}).on == ["FAILED", "COMPLETED"]


# The outbox: written by the transition scripts, for final states only


def _outbox(client) -> list[tuple[str, str]]:
    from envflow.store import keys

    return [(f[b"run"].decode(), f[b"state"].decode()) for _, f in client.redis.xrange(keys.HOOK_OUTBOX)]


def _hooked(name: str = "flow/dep", on=("FAILED", "COMPLETED", "CANCELLED", "CRASHED"), **fields):
    from .support.runs import record

    hooks = [Hook(on=list(on), webhook="http://127.0.0.1:9/h")]
    return record(name).model_copy(update={"hooks": hooks, **fields})


def test_final_transitions_write_one_outbox_event_and_retried_attempts_none(client) -> None:
    from envflow.models import Attempt, RunState
    from envflow.store.protocol import Ending

    from .support.runs import claim, drive

    record = client.create_deployment(_hooked())
    failed = client.store.create(record, {})
    drive(client, failed, state=RunState.FAILED)
    # A retried attempt fires nothing; the run's final state fires once.
    retried = client.store.create(record, {})
    claimed = claim(client, retried)
    attempt = Attempt(n=claimed.attempt, worker="w1", started_at=claimed.started_at, ended_at=claimed.started_at + 1,
                      state="FAILED", exit_code=1)
    assert client.store.scripts.finish(retried, Ending(attempt, RunState.PENDING)).run()
    assert _outbox(client) == [(failed, "FAILED")]
    drive(client, retried, state=RunState.COMPLETED)
    # Cancelled before it started; crashed (its lease gone, no retry left); one that never had a hook.
    cancelled = client.store.create(record, {})
    client.cancel(cancelled)
    crashed = client.store.create(record, {})
    claimed = claim(client, crashed)
    client.redis.delete(f"envflow:run:{crashed}:lease")
    assert client.store.scripts.crash(crashed, claimed.attempt, False, "worker lost").run() is RunState.CRASHED
    plain = client.store.create(client.create_deployment(_hooked("flow/plain", hooks=[])), {})
    drive(client, plain, state=RunState.FAILED)
    assert _outbox(client) == [(failed, "FAILED"), (retried, "COMPLETED"), (cancelled, "CANCELLED"),
                               (crashed, "CRASHED")]


def test_claims_end_now_and_unrunnable_write_events_and_site_hooks_cover_every_run(client) -> None:
    from envflow.store.hooks import SiteHooks

    from .support.runs import register

    plain = register(client, "flow/plain")  # no hooks of its own
    cancelled = client.store.create(plain, {})
    client.redis.hset(f"envflow:run:{cancelled}", "cancel_requested_at", "1")  # requested as it was claimed
    failed = client.store.create(plain, {})
    assert client.store.scripts.unrunnable(failed, "no worker has its env").run()
    assert _outbox(client) == []
    site = SiteHooks(client.redis)
    hook_id = site.add(Hook(on=["FAILED", "CANCELLED"], webhook="http://127.0.0.1:9/site", tags=["nightly"]))
    assert list(site.all()) == [hook_id]
    claimed = client.store.scripts.claim(cancelled, "w1", "default").run()
    assert getattr(claimed, "detail", None) == "CANCELLED"
    other = client.store.create(plain, {})
    assert client.store.scripts.unrunnable(other, "no worker has its env").run()
    assert _outbox(client) == [(cancelled, "CANCELLED"), (other, "FAILED")]
    assert site.remove(hook_id) and not site.all()


def test_hook_add_ls_rm_commands_and_urls_shown_redacted(client, env_vars, workdir) -> None:
    import subprocess

    env = {**os.environ, **env_vars}

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(envflow_command("hook", *args), cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == code, done.stderr
        return done

    added = cli("add", "--on", "failed,CRASHED", "--webhook", "https://bot:s3cret@chat.example/hook", "--tag", "etl")
    assert "s3cret" not in added.stdout and "bot:***@chat.example" in added.stdout
    (row,) = json.loads(cli("ls", "--json").stdout)
    assert row["on"] == ["FAILED", "CRASHED"] and row["tags"] == ["etl"] and "s3cret" not in row["webhook"]
    bad = cli("add", "--on", "RUNNING", "--webhook", "http://a.example", code=1)
    assert "'RUNNING' is not an event" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "http:// or https://" in cli("add", "--on", "FAILED", "--webhook", "file:///etc/passwd", code=1).stderr
    cli("rm", row["id"])
    assert json.loads(cli("ls", "--json").stdout) == []
    assert "no site-wide hook" in cli("rm", row["id"], code=1).stderr
    record = client.create_deployment(_hooked().model_copy(update={"hooks": [
        Hook(on=["FAILED"], webhook="https://bot:s3cret@chat.example/x?token=abc")]}))
    shown = subprocess.run(envflow_command("deployment", "inspect", record.name, "--json"), capture_output=True,
                           text=True, env=env, timeout=60, cwd=workdir)
    (hook,) = json.loads(shown.stdout)["hooks"]
    assert hook["webhook"] == "https://bot:***@chat.example/x?token=***" and "s3cret" not in shown.stdout


# Delivery: a real HTTP receiver on loopback


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread that records every request and answers from a script:
    one ``(code, headers, delay)`` per request in turn, then 200s."""

    def __init__(self, answers: list[tuple[int, dict[str, str], float]] | None = None) -> None:
        import http.server
        import threading

        self.answers = list(answers or [])
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                    code, headers, delay = receiver.answers.pop(0) if receiver.answers else (200, {}, 0.0)
                if delay:
                    time.sleep(delay)
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 30) -> list[tuple[dict[str, str], bytes, float]]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} requests came"
            time.sleep(0.02)
        return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def start_scheduler(env_vars, workdir, tmp_path):
    import subprocess

    procs: list[WorkerProcess] = []

    def start(extra_env: dict[str, str] | None = None) -> WorkerProcess:
        log = tmp_path / f"scheduler-{len(procs)}.log"
        with open(log, "wb") as handle:
            proc = subprocess.Popen(envflow_command("scheduler", "start"), cwd=workdir, stdout=handle,
                                    stderr=subprocess.STDOUT, env={**os.environ, **env_vars, **(extra_env or {})})
        procs.append(WorkerProcess(proc, log))
        deadline = time.monotonic() + 20
        while "started on" not in procs[-1].output():
            assert proc.poll() is None and time.monotonic() < deadline, procs[-1].output()
            time.sleep(0.02)
        return procs[-1]

    yield start
    for p in procs:
        p.stop(signal.SIGKILL, timeout=10)


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(answers: list[tuple[int, dict[str, str], float]] | None = None) -> Receiver:
        made.append(Receiver(answers))
        return made[-1]

    yield make
    for r in made:
        r.close()


SECRET = "whsec_" + base64.b64encode(b"a key of thirty-two bytes, exact").decode()
RAISES = """
    from envflow import flow

    @flow
    def boom(api_token="tok", where="https://u:pw@db.example/x"):
        raise RuntimeError("no luck at https://u:pw@db.example/x")
"""
SLEEPS = """
    import time
    from envflow import flow

    @flow
    def nap(seconds=60):
        print("napping", flush=True)
        time.sleep(seconds)
"""


def test_a_flow_that_raises_gives_exactly_one_signed_delivery(client, start_worker, receiver, venv, workdir) -> None:
    from standardwebhooks import Webhook

    r = receiver()
    name = deploy(client, write_flow(workdir, RAISES), "boom", virtualenv=str(venv),
                  hooks=[{"on": ["FAILED"], "webhook": r.url}, {"on": ["COMPLETED"], "webhook": r.url}])
    worker = start_worker(extra_env={"ENVFLOW_WEBHOOK_SECRET": SECRET, "ENVFLOW_UI_URL": "http://ui.example:8080/"})
    run = client.run(name, {"api_token": "s3cret", "where": "https://u:pw@db.example/x"})
    assert run.wait(30) is RunState.FAILED
    ((headers, body, _),) = r.wait_for(1)
    event = Webhook(SECRET).verify(body, headers)  # the specification's own check, signature and timestamp
    assert event["type"] == "run.failed" and event["timestamp"].endswith("Z")
    data = event["data"]
    assert data["run_id"] == run.id and data["deployment"] == name and data["state"] == "FAILED"
    assert data["attempt"] == 1 and data["attempts"] == 1 and data["worker"]
    assert data["parameters"] == {"api_token": "***", "where": "https://u:***@db.example/x"}
    assert "RuntimeError" in data["error"] and "pw@" not in data["error"]
    assert data["url"] == f"http://ui.example:8080/runs/{run.id}"
    assert headers["webhook-id"].startswith(headers["webhook-id"].split(".")[0]) and headers["webhook-id"].endswith(".d0")
    _until_status(client, "delivered")
    time.sleep(1.0)  # nothing else comes: no second delivery, none for the COMPLETED hook
    assert len(r.requests) == 1
    (row,) = _cli_deliveries(client)
    assert row["tries"] == 1 and row["codes"] == "200" and row["target"] == r.url and row["status"] == "delivered"
    from envflow.settings import Settings

    assert SECRET[6:] not in worker.output()
    assert Settings(webhook_secret=SECRET).redacted()["webhook_secret"] == "***"  # what `envflow config` prints


def _cli_deliveries(client, *args: str) -> list[dict]:
    import subprocess

    done = subprocess.run(envflow_command("hook", "deliveries", "--json", *args), capture_output=True, text=True,
                          env={**os.environ, "ENVFLOW_REDIS_URL": client.settings.redis_url}, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _deliveries(client, failed: bool = False) -> list[dict[str, str]]:
    from envflow.store.hooks import hook_store

    return hook_store(client.redis, client.settings).deliveries(failed=failed)


def _until_status(client, *statuses: str, timeout: float = 15) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while sorted(d["status"] for d in _deliveries(client)) != sorted(statuses):
        assert time.monotonic() < deadline, _deliveries(client)
        time.sleep(0.05)
    return _deliveries(client)


@pytest.fixture
def deliver_here(client, monkeypatch):
    """A hook deliverer in this process (its thread), with short retry delays."""
    from envflow.hooks.service import HookDelivery
    from envflow.settings import Settings

    started: list[HookDelivery] = []

    def start(**settings: str) -> HookDelivery:
        for k, v in {"ENVFLOW_WEBHOOK_RETRY_DELAYS": "0.2", "ENVFLOW_WEBHOOK_CLAIM_IDLE": "2", **settings}.items():
            monkeypatch.setenv(k, v)
        started.append(HookDelivery(client.redis, Settings(), f"test-{len(started)}", defer_to_scheduler=False))
        started[-1].start()
        return started[-1]

    yield start
    for d in started:
        d.close()


def test_retries_keep_one_webhook_id_honour_retry_after_and_410_stops(client, receiver, deliver_here) -> None:
    from .support.runs import drive

    flaky = receiver([(500, {}, 0.0), (503, {"Retry-After": "1"}, 0.0)])
    gone = receiver([(410, {}, 0.0)])
    record = client.create_deployment(_hooked().model_copy(update={"hooks": [
        Hook(on=["FAILED"], webhook=flaky.url), Hook(on=["FAILED"], webhook=gone.url)]}))
    run_id = client.store.create(record, {})
    drive(client, run_id, state=RunState.FAILED)
    deliver_here(ENVFLOW_WEBHOOK_SECRET=SECRET)
    requests = flaky.wait_for(3)
    assert len({h["webhook-id"] for h, _, _ in requests}) == 1
    assert requests[2][2] - requests[1][2] >= 0.9  # Retry-After: 1, over the 0.2 s backoff
    assert len(gone.wait_for(1)) == 1
    rows = {d["target"]: d for d in _until_status(client, "delivered", "gone")}
    assert rows[flaky.url]["codes"] == "500,503,200" and rows[flaky.url]["tries"] == "3"
    assert rows[gone.url]["codes"] == "410"
    time.sleep(0.5)
    assert len(gone.requests) == 1 and len(flaky.requests) == 3


def test_a_receiver_that_never_answers_well_ends_dead_lettered_and_replays(client, receiver, deliver_here) -> None:
    from .support.runs import drive

    down = receiver([(500, {}, 0.0)] * 100)
    record = client.create_deployment(_hooked().model_copy(update={"hooks": [Hook(on=["COMPLETED"],
                                                                                  webhook=down.url)]}))
    drive(client, client.store.create(record, {}), state=RunState.COMPLETED)
    deliver_here(ENVFLOW_WEBHOOK_RETRY_FOR="1")
    _until_status(client, "failed")
    (dead,) = _cli_deliveries(client, "--failed")
    assert dead["status"] == "failed" and dead["tries"] >= 2 and dead["last_error"].startswith("HTTP 500")
    tries = len(down.requests)
    down.answers.clear()  # it answers 200 from now on
    import subprocess

    done = subprocess.run(envflow_command("hook", "replay", dead["id"]), capture_output=True, text=True,
                          env={**os.environ, "ENVFLOW_REDIS_URL": client.settings.redis_url}, timeout=60)
    assert done.returncode == 0, done.stderr
    requests = down.wait_for(tries + 1)
    assert {h["webhook-id"] for h, _, _ in requests} == {dead["id"]}
    _until_status(client, "delivered")
    assert _deliveries(client, failed=True) == []


def test_a_sigkilled_worker_gives_run_crashed(client, start_worker, start_scheduler, receiver, venv, workdir) -> None:
    r = receiver()
    name = deploy(client, write_flow(workdir, SLEEPS), "nap", virtualenv=str(venv),
                  hooks=[{"on": ["CRASHED"], "webhook": r.url}])
    worker = start_worker()
    start_scheduler()  # its reaper finds the crash; it delivers
    run = client.run(name)
    deadline = time.monotonic() + 30
    while run.record().state is not RunState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.stop(signal.SIGKILL)
    assert run.wait(30) is RunState.CRASHED
    ((_, body, _),) = r.wait_for(1)
    assert json.loads(body)["type"] == "run.crashed" and json.loads(body)["data"]["run_id"] == run.id


def test_a_deliverer_killed_mid_delivery_hands_the_event_on(client, start_scheduler, receiver) -> None:
    from .support.runs import drive

    r = receiver([(200, {}, 60.0)])  # the first request hangs: its deliverer is killed holding it
    record = client.create_deployment(_hooked().model_copy(update={"hooks": [Hook(on=["FAILED"], webhook=r.url)]}))
    short = {"ENVFLOW_WEBHOOK_CLAIM_IDLE": "2"}
    first = start_scheduler(extra_env=short)
    drive(client, client.store.create(record, {}), state=RunState.FAILED)
    r.wait_for(1)
    first.stop(signal.SIGKILL)
    start_scheduler(extra_env=short)
    requests = r.wait_for(2)
    assert requests[0][0]["webhook-id"] == requests[1][0]["webhook-id"]  # at least once: the same id twice
    _until_status(client, "delivered")


RUN_HOOK_FLOWS = """
    from envflow import flow

    @flow
    def extract():
        return 1

    @flow
    def transform(source="lake"):
        return source
"""


def test_a_run_hook_starts_exactly_one_run_even_with_two_schedulers(client, start_scheduler, workdir) -> None:
    import subprocess
    import threading

    from envflow.hooks.deliverer import Deliverer

    from .support.runs import drive

    path = write_flow(workdir, RUN_HOOK_FLOWS)
    then = deploy(client, path, "transform", name="nightly")
    first = deploy(client, path, "extract", name="nightly",
                   hooks=[{"on": ["COMPLETED"], "run": then, "parameters": {"source": "warehouse"}}])
    start_scheduler()
    start_scheduler()
    origin = client.run(first).id
    drive(client, origin, state=RunState.COMPLETED)
    deadline = time.monotonic() + 20
    while not client.runs(then):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (delivery,) = _until_status(client, "delivered")
    # Replays, and more deliverers racing for the same delivery, start no second run.
    rivals = [Deliverer(client.redis, client.settings, f"rival-{i}") for i in range(4)]
    threads = [threading.Thread(target=d._try_one, args=(delivery["id"],)) for d in rivals]
    from envflow.store.hooks import hook_store

    hook_store(client.redis, client.settings).replay(delivery["id"])
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    _until_status(client, "delivered")
    (started,) = client.runs(then)
    assert started.parameters == {"source": "warehouse"} and started.started_by == f"{origin}:COMPLETED"
    queued = [j.decode() for j in client.redis.lrange("rq:queue:default", 0, -1)]
    assert queued.count(started.id) == 1, queued  # enqueued once, not once per try
    shown = subprocess.run(envflow_command("run", "inspect", started.id), capture_output=True, text=True, timeout=60,
                           env={**os.environ, "ENVFLOW_REDIS_URL": client.settings.redis_url})
    assert f"started by run {origin[:8]}'s COMPLETED hook" in shown.stdout, shown.stdout + shown.stderr


def test_late_fires_once_for_a_run_waiting_past_late_after_with_no_worker(client, start_scheduler, receiver,
                                                                          workdir) -> None:
    import subprocess

    r = receiver()
    path = write_flow(workdir, RUN_HOOK_FLOWS)
    name = deploy(client, path, "extract", name="late", late_after=1, hooks=[{"on": ["LATE"], "webhook": r.url}])
    on_time = deploy(client, path, "transform", name="on-time", late_after=60, hooks=[{"on": ["LATE"],
                                                                                      "webhook": r.url}])
    start_scheduler()  # its reaper's pass finds the late run; no worker is live
    run = client.run(name)
    client.run(on_time)
    ((_, body, _),) = r.wait_for(1)
    event = json.loads(body)
    assert event["type"] == "run.late" and event["data"]["run_id"] == run.id
    assert event["data"]["state"] == "LATE" and event["data"]["ended_at"] is None
    assert run.record().state is RunState.PENDING and run.record().late_at  # LATE is an event: it goes on waiting
    listed = subprocess.run(envflow_command("run", "ls"), capture_output=True, text=True, timeout=60,
                            env={**os.environ, "ENVFLOW_REDIS_URL": client.settings.redis_url})
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "PENDING (late)" in rows[run.short_id] and "late" not in rows[[k for k in rows if k != run.short_id][0]]
    time.sleep(1.5)  # several reaper passes: it fired once
    assert len(r.requests) == 1


def test_an_event_read_but_never_expanded_is_taken_over_after_the_idle_time(client, receiver, deliver_here) -> None:
    from envflow.store.hooks import hook_store

    from .support.runs import drive

    r = receiver()
    record = client.create_deployment(_hooked().model_copy(update={"hooks": [Hook(on=["FAILED"], webhook=r.url)]}))
    drive(client, client.store.create(record, {}), state=RunState.FAILED)
    # A deliverer took the event from the group and died before recording its delivery.
    (taken,) = hook_store(client.redis, client.settings).read_events("died-holding-it", 10, 1)
    deliver_here(ENVFLOW_WEBHOOK_CLAIM_IDLE="0.5")
    ((headers, _, _),) = r.wait_for(1)
    assert headers["webhook-id"] == f"{taken.id}.d0"
    _until_status(client, "delivered")
    assert client.redis.xlen("envflow:hooks:outbox") == 0  # acknowledged and deleted once recorded


def test_a_hanging_receiver_holds_one_try_for_the_timeout_and_blocks_no_other(client, receiver, deliver_here) -> None:
    from .support.runs import drive

    hangs, fine = receiver([(200, {}, 3.0)]), receiver()
    slow = client.create_deployment(_hooked("flow/slow").model_copy(update={"hooks": [
        Hook(on=["FAILED"], webhook=hangs.url)]}))
    quick = client.create_deployment(_hooked("flow/quick").model_copy(update={"hooks": [
        Hook(on=["FAILED"], webhook=fine.url)]}))
    deliver_here(ENVFLOW_WEBHOOK_TIMEOUT="1.5")
    drive(client, client.store.create(slow, {}), state=RunState.FAILED)
    ((_, _, hung_at),) = hangs.wait_for(1)
    drive(client, client.store.create(quick, {}), state=RunState.FAILED)
    ((_, _, fine_at),) = fine.wait_for(1)
    assert fine_at < hung_at + 1.5  # delivered while the other try still waited for its answer
    hangs.wait_for(2)  # the timed-out try is retried
    rows = {d["target"]: d for d in _until_status(client, "delivered", "delivered")}
    assert rows[hangs.url]["codes"] == "-,200"  # no answer within the timeout, then delivered


def test_an_event_outlives_redis_killed_and_restarted_with_aof(tmp_path, receiver) -> None:
    from envflow.client import Client
    from envflow.hooks.deliverer import Deliverer
    from envflow.settings import Settings

    from .support.processes import RedisServer
    from .support.runs import drive

    (tmp_path / "aof").mkdir()
    server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        settings = Settings(redis_url=server.url, state_dir=tmp_path / "state")
        client = Client(settings=settings)
        r = receiver()
        record = client.create_deployment(_hooked().model_copy(update={"hooks": [Hook(on=["FAILED"], webhook=r.url)]}))
        run_id = client.store.create(record, {})
        drive(client, run_id, state=RunState.FAILED)
        assert server.proc is not None
        server.proc.kill()  # no shutdown save: only the append-only file keeps what was written
        server.proc.wait(10)
        server.start()
        deliverer = Deliverer(Client(settings=settings).redis, settings, "after-restart")
        try:
            for _ in range(20):
                deliverer.pass_once(0.1)
                if r.requests:
                    break
            ((_, body, _),) = r.wait_for(1)
        finally:
            deliverer.close()
        assert json.loads(body)["data"]["run_id"] == run_id
    finally:
        server.stop()
