"""The worker's trust boundaries: one run's bad input never kills a worker, a flow never sees the
worker's credentials, never changes what a later run executes, and cannot flood Redis or the log."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from rq import Queue
from rq.webhook import Webhook

from envflow.client import Client
from envflow.models import RunState
from envflow.store import keys
from envflow.store.jobs import SERIALIZER

from ..support.flows import deploy, write_flow
from ..support.processes import RedisServer, envflow_command, wait_until

PASSWORD = "pw-7f3c9e1d5b"

FLOWS = """
    import os, sys
    from envflow import flow

    @flow
    def hello(who: str = "world"):
        print(f"hello {who}")
        return who

    @flow
    def environ():
        with open("/proc/self/environ", "rb") as f:
            raw = f.read().decode(errors="replace")
        return {"environ": dict(os.environ), "proc": raw}

    @flow
    def flood(seconds: float = 3.0):
        import time
        chunk = "x" * 4096
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sys.stdout.write(chunk)
        sys.stdout.flush()
"""

# Appends to and replaces every file it can reach under the given directories, and plants
# modules beside them; envflow's own files are replaced by code that prints PWNED.
HOSTILE = """
    import os
    from envflow import flow

    PAYLOAD = 'print("PWNED")\\nfrom envflow import flow\\n@flow\\ndef hello(who="x"):\\n    print("PWNED")\\n'

    @flow
    def tamper(roots: list):
        touched = 0
        for root in roots:
            for folder, dirs, files in os.walk(root):
                for name in files:
                    path = os.path.join(folder, name)
                    try:
                        if name.endswith(".py"):
                            with open(path, "w") as f:
                                f.write(PAYLOAD)
                        else:
                            with open(path, "ab") as f:
                                f.write(b"PWNED")
                        touched += 1
                    except OSError:
                        pass
                for planted in ("json.py", "os.py", "envflow.py", "sitecustomize.py"):
                    try:
                        with open(os.path.join(folder, planted), "w") as f:
                            f.write(PAYLOAD)
                    except OSError:
                        pass
        print(f"touched {touched}")
        return touched
"""


def test_a_bad_variable_fails_the_run_and_never_the_worker(client, start_worker, venv, workdir):
    """A NUL byte in a variable makes Popen raise ValueError: that run is FAILED, the worker goes on."""
    name = deploy(client, write_flow(workdir, FLOWS), "hello", virtualenv=str(venv))
    worker = start_worker()
    client.pause_queue("default")
    run = client.run(name)
    raw = json.loads(client.redis.hget(keys.run(run.id), "spec"))
    raw["env_vars"] = {"BAD": "a\x00b"}  # as written by whoever can write to Redis
    client.redis.hset(keys.run(run.id), "spec", json.dumps(raw))
    client.resume_queue("default")
    assert run.wait(30) is RunState.FAILED
    assert "null byte" in (run.record().error or "")
    assert worker.proc.poll() is None
    assert client.run(name, {"who": "again"}).result(timeout=30) == "again"


def test_a_flow_sees_none_of_the_workers_credentials(tmp_path, env_vars, settings, start_worker, venv, workdir):
    server = RedisServer(tmp_path, "--requirepass", PASSWORD)
    server.start()
    try:
        env_vars["ENVFLOW_REDIS_URL"] = server.url
        client = Client(settings=settings.model_copy(update={"redis_url": server.url}))
        name = deploy(client, write_flow(workdir, FLOWS), "environ", virtualenv=str(venv), env={"MINE": "given"})
        # Globs that match the worker's own credentials, and one named outright: none of them passes.
        worker = start_worker(extra_env={"REDISCLI_AUTH": PASSWORD, "REDIS_PASSWORD": PASSWORD, "KEPT_TOO": "yes",
                                         "ENVFLOW_PASS_ENV": "KEPT_*,*_URL,*_AUTH,*PASSWORD*,REDISCLI_AUTH",
                                         "OTHER_VAR": "not passed", "APP_URL": "http://app"})
        seen = client.run(name).result(timeout=30)
        assert PASSWORD not in json.dumps(seen)
        assert PASSWORD not in seen["proc"]
        assert not [k for k in seen["environ"] if k.startswith(("ENVFLOW_", "REDIS"))
                    and k not in ("ENVFLOW_RUN_ID", "ENVFLOW_RUN_ATTEMPT")]
        assert seen["environ"]["MINE"] == "given" and seen["environ"]["KEPT_TOO"] == "yes"
        assert "OTHER_VAR" not in seen["environ"] and seen["environ"]["PATH"].startswith(str(venv / "bin"))
        assert seen["environ"]["APP_URL"] == "http://app"
        assert worker.output().count("ENVFLOW_PASS_ENV names REDISCLI_AUTH, which never reaches a flow") == 1
    finally:
        server.stop()


def _private_copy_of_envflow(target: Path) -> dict[str, str]:
    """envflow installed where a hostile flow may rewrite it (never the checkout itself)."""
    import envflow
    import envflow.scheduler
    import envflow.worker

    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(envflow.__file__).parent, target / "envflow", ignore=skip)
    for package, name in ((envflow.worker, "worker"), (envflow.scheduler, "scheduler")):
        shutil.copytree(Path(package.__file__).parent, target / "envflow" / name, ignore=skip)
    return {"PYTHONPATH": str(target)}


def test_a_flow_cannot_change_what_later_runs_execute(client, start_worker, venv, workdir, tmp_path, env_vars):
    install = tmp_path / "install"
    extra = _private_copy_of_envflow(install)
    benign = deploy(client, write_flow(workdir, FLOWS), "hello", virtualenv=str(venv))
    hostile = deploy(client, write_flow(workdir, HOSTILE, "hostile.py"), "tamper", virtualenv=str(venv))
    start_worker(extra_env=extra)
    run = client.run(benign)
    assert [line.text for line in run.follow(timeout=30)] == ["hello world"]
    roots = [env_vars["ENVFLOW_STATE_DIR"], str(install / "envflow")]
    assert client.run(hostile, {"roots": roots}).result(timeout=60) > 5
    for _ in range(2):  # the interpreter started ahead for the next run included
        again = client.run(benign, {"who": "again"})
        assert [line.text for line in again.follow(timeout=30)] == ["hello again"]
        assert again.result(timeout=30) == "again"


def test_output_is_bounded_in_bytes(client, start_worker, venv, workdir):
    cap = 2 * 1024 * 1024
    name = deploy(client, write_flow(workdir, FLOWS), "flood", virtualenv=str(venv), stream_output=True)
    worker = start_worker(extra_env={"ENVFLOW_HISTORY_MAX_BYTES": str(cap)})
    run = client.run(name, {"seconds": 4})
    assert run.wait(60) is RunState.COMPLETED
    assert client.redis.memory_usage(keys.output(run.id)) < cap * 1.5
    assert os.path.getsize(worker.log) < cap * 1.5
    assert "is not echoed here" in worker.output()
    logs = subprocess.run(envflow_command("run", "logs", run.id), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ENVFLOW_REDIS_URL": client.settings.redis_url})
    assert "earlier output was dropped from the history" in logs.stderr
    assert 0 < len(logs.stdout) <= cap


class _Hits(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook_url():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hits.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_refused_and_failed_jobs_call_nothing_of_the_job(client, start_worker, venv, workdir, webhook_url):
    name = deploy(client, write_flow(workdir, FLOWS + "\n    @flow\n    def boom():\n        raise ValueError('x')\n"),
                  "boom", virtualenv=str(venv))
    start_worker()
    queue = Queue("default", connection=client.redis, serializer=SERIALIZER)
    foreign = queue.enqueue("os.getcwd", webhooks=[Webhook(webhook_url, "failed")])
    wait_until(lambda: foreign.get_status(refresh=True) == "failed", 30, what="the foreign job to be refused")
    client.pause_queue("default")
    run = client.run(name)
    hooks = json.dumps([{"url": webhook_url, "job_status": "failed", "method": "GET", "headers": None, "timeout": 5}])
    client.redis.hset(f"rq:job:{run.id}", "webhooks", hooks)  # an attacker's addition to a real run's job
    client.resume_queue("default")
    assert run.wait(30) is RunState.FAILED
    origin = client.redis.hget(f"rq:job:{run.id}", "origin").decode()  # its env's sub-queue of default
    wait_until(lambda: client.redis.zscore(f"rq:failed:{origin}", run.id) is not None, 10, what="RQ's failure record")
    assert _Hits.hits == []


def test_an_idle_worker_rides_out_an_outage_with_its_queue_paused(tmp_path, env_vars, settings, start_worker, venv,
                                                                   workdir):
    server = RedisServer(tmp_path)
    server.start()
    try:
        env_vars["ENVFLOW_REDIS_URL"] = server.url
        client = Client(settings=settings.model_copy(update={"redis_url": server.url}))
        client.pause_queue("side")
        worker = start_worker("--queue", "side")  # waits in envflow's own loop, outside RQ's dequeue
        server.stop()
        time.sleep(3)  # several paused-queue polls and heartbeats fail meanwhile
        server.start()
        assert worker.proc.poll() is None, worker.output()
        name = deploy(client, write_flow(workdir, FLOWS), "hello", virtualenv=str(venv), queue="side")
        assert client.run(name).result(timeout=60) == "world"  # the restarted server forgot the pause
    finally:
        server.stop()


def test_the_state_dir_is_private(client, start_worker, venv, workdir, env_vars):
    name = deploy(client, write_flow(workdir, FLOWS), "hello", virtualenv=str(venv))
    start_worker()
    assert client.run(name).result(timeout=30) == "world"
    state = Path(env_vars["ENVFLOW_STATE_DIR"])
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


SLOT_FORGER = """
    import time
    from envflow import flow

    @flow
    def forge(path: str, name: str):
        with open(path, "w") as f:  # the state dir is the worker's user's: a flow can write it
            f.write(name)

    @flow
    def hold(seconds: float):
        time.sleep(seconds)
        return "held to the end"
"""


@pytest.mark.parametrize("newcomer_namespace", ["same", "other"])  # other: its stamp cannot be checked (a container)
def test_a_forged_slot_file_never_makes_a_worker_reap_a_live_one(client, env_vars, venv, workdir, tmp_path,
                                                                  newcomer_namespace):
    # The victim runs as a flow really runs: with no capabilities (root's would open any 0600 file), and
    # without the flow sandbox, which alone keeps flows from the slot files: the reaping rule must hold
    # on a worker where Landlock is missing too (the sandbox's own test is in test_isolation.py).
    log = tmp_path / "victim.log"
    victim = subprocess.Popen(["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
                               *envflow_command("worker", "start")], cwd=workdir,
                              env={**os.environ, **env_vars, "ENVFLOW_FLOW_SANDBOX": "false"},
                              stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "ready on queue" in log.read_text() or victim.poll() is not None, 20, what="the victim")
        name = log.read_text().split("worker ", 1)[1].split(" ready", 1)[0].split()[-1]
        flows = write_flow(workdir, SLOT_FORGER)
        forged = Path(env_vars["ENVFLOW_STATE_DIR"]) / "worker-locks" / "slot-2.lock"  # the next worker's slot
        client.run(deploy(client, flows, "forge", virtualenv=str(venv)), {"path": str(forged), "name": name}) \
            .result(timeout=30)
        assert forged.read_text() == name
        held = client.run(deploy(client, flows, "hold", name="held", virtualenv=str(venv)), {"seconds": 4})
        wait_until(lambda: held.state is RunState.RUNNING, 20, what="the victim's run to start")
        prefix = [] if newcomer_namespace == "same" else ["unshare", "--pid", "--fork", "--kill-child"]
        newcomer_log = tmp_path / "newcomer.log"
        newcomer = subprocess.Popen([*prefix, *envflow_command("worker", "start")], cwd=workdir,
                                    env={**os.environ, **env_vars}, stdout=open(newcomer_log, "w"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
        assert held.wait(30) is RunState.COMPLETED, newcomer_log.read_text()  # not reaped
        assert victim.poll() is None and name in [w["name"] for w in client.workers()]
        assert f"not reaping the runs of {name}" in newcomer_log.read_text(), newcomer_log.read_text()
    finally:
        victim.terminate()
        if "newcomer" in locals():
            os.killpg(newcomer.pid, signal.SIGKILL)  # unshare ignores SIGTERM, and so may its child, its pid namespace's init
            newcomer.wait(30)
        victim.wait(30)
