"""Bad and hostile input on the client side: every one is refused in one line, nothing else breaks."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from rq import Queue

from envflow.errors import RunNotFound
from envflow.jobs import RUN_FLOW, SERIALIZER, is_run_job

from ..conftest import deploy, envflow_command, write_flow
from .helpers import wait_until

HELLO = """
    from envflow import flow

    @flow
    def hello():
        print("hello")
"""


@pytest.fixture
def cli(env_vars, workdir):
    env = {**os.environ, **env_vars}

    def run(*args: str, check: int | None = 0, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(envflow_command(*args), cwd=workdir, env={**env, **(env_extra or {})},
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check is not None:
            assert done.returncode == check, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done

    return run


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_run_ids_are_checked_by_shape(cli, client, start_worker, workdir, venv):
    name = deploy(client, write_flow(workdir, HELLO), "hello", virtualenv=str(venv))
    run = client.run(name)
    for text in (f"{run.id}:out", f"{run.id}:lease", run.id[:6] + "*", run.id.upper()):
        with pytest.raises(RunNotFound):
            client.get_run(text)
        assert "32 hex characters" in one_line_error(cli("run", "inspect", text, check=None))
    assert cli("run", "inspect", run.id[:6]).stdout.startswith("id")
    assert is_run_job(RUN_FLOW, [run.id], {}) and not is_run_job(RUN_FLOW, [f"{run.id}:out"], {})
    # A JSON job naming the run's output stream is refused; the worker lives on and runs the real run.
    Queue("default", connection=client.redis, serializer=SERIALIZER).enqueue_call(
        RUN_FLOW, args=[f"{run.id}:out"], job_id="hostile", at_front=True)
    worker = start_worker()
    assert run.wait(30).value == "COMPLETED"
    wait_until(lambda: "refused job hostile" in worker.output(), 10, what="the hostile job's refusal")
    assert worker.proc.poll() is None, worker.output()
    assert [line.text for line in run.follow(timeout=5)] == ["hello"]
    assert json.loads(cli("run", "ls", "--json").stdout)[0]["state"] == "COMPLETED"


def test_config_hides_query_passwords_and_survives_bad_ports(cli):
    for url in ("redis://127.0.0.1:1/0?password=pw-query-1", "unix:///tmp/envflow-none.sock?db=0&password=pw-query-2"):
        shown = cli("config", env_extra={"ENVFLOW_REDIS_URL": url}).stdout
        assert "pw-query" not in shown and "password=***" in shown, shown
    shown = json.loads(cli("config", "--json", env_extra={"ENVFLOW_SECRET_PATTERNS": "*TOKEN*,*DSN*"}).stdout)
    assert shown["secret_patterns"] == "*TOKEN*,*DSN*"
    for port in ("abc", "99999"):
        url = f"redis://:pw-port@127.0.0.1:{port}/0"
        shown = cli("config", env_extra={"ENVFLOW_REDIS_URL": url})
        assert f"redis://:***@127.0.0.1:{port}/0" in shown.stdout and "pw-port" not in shown.stdout + shown.stderr
        listed = cli("run", "ls", check=None, env_extra={"ENVFLOW_REDIS_URL": url})
        assert "invalid Redis URL" in one_line_error(listed) and "pw-port" not in listed.stderr


URL_ENV = {"DATABASE_URL": "postgres://u:pg-pass@db.example/app", "HOOK": "https://h.example/x?token=tk-1&a=b",
           "API_TOKEN": "tok-2", "PLAIN": "visible"}


def test_url_credentials_are_hidden_whatever_the_name(cli, client, workdir, venv, tmp_path):
    from ..conftest import make_conda_prefix

    name = deploy(client, write_flow(workdir, HELLO), "hello", virtualenv=str(venv), env=URL_ENV)
    shown = [cli("deployment", "inspect", name).stdout, cli("deployment", "inspect", name, "--json").stdout,
             cli("deployment", "ls", "--json").stdout, cli("deployment", "preview", name).stdout]
    for text in shown:
        assert "pg-pass" not in text and "tk-1" not in text and "tok-2" not in text, text
    inspected = json.loads(shown[1])["env_vars"]
    assert inspected == {"DATABASE_URL": "postgres://u:***@db.example/app", "HOOK": "https://h.example/x?token=***&a=b",
                         "API_TOKEN": "***", "PLAIN": "visible"}
    make_conda_prefix(tmp_path / "cenv", env_vars={"CACHE_URL": "redis://:cache-pw@h:6379/0"})
    checked = cli("env", "check", str(tmp_path / "cenv")).stdout
    assert "CACHE_URL=redis://:***@h:6379/0" in checked and "cache-pw" not in checked
