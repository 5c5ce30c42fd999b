"""`envflow up`'s private Redis: a password always, its data readable by its user only."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import psutil
import pytest
import redis

from ..support.flows import write_flow
from ..support.processes import envflow_command, free_port, wait_until

GREETER = """
    from envflow import flow

    @flow
    def greet(name: str):
        print(f"hello {name}")
"""


def start_up(env: dict[str, str], workdir: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(envflow_command("up", "--workers", "1", "--no-scheduler"), cwd=workdir, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_until(lambda: "ready on queue" in log.read_text() or proc.poll() is not None, 30, what="envflow up")
    assert proc.poll() is None, log.read_text()
    return proc


def stop_up(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0


def modes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): stat.S_IMODE(p.stat().st_mode) for p in [directory, *directory.rglob("*")]}


def redis_server_cmdlines() -> list[str]:
    return [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "redis-server"]


def test_up_generates_a_password_and_keeps_its_data_private(env_vars, workdir, venv, tmp_path):
    port = free_port()
    state = tmp_path / "up-state"
    env = {**os.environ, **env_vars, "ENVFLOW_REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "ENVFLOW_STATE_DIR": str(state)}
    log = tmp_path / "up.log"
    proc = start_up(env, workdir, log)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):  # no password: refused
            redis.Redis(port=port).ping()
        password_file = state / "redis" / "password"
        assert "readable by you only" in log.read_text() and str(password_file) in log.read_text()
        # envflow commands of the same user and state dir find the password; nothing prints it.
        write_flow(workdir, GREETER, "greeter.py")
        (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n")
        subprocess.run(envflow_command("deployment", "create", "d.yaml"), cwd=workdir, env=env, check=True,
                       capture_output=True)
        done = subprocess.run(envflow_command("deployment", "run", "greet/d", "-p", "name=up", "--follow"),
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout == "hello up\n", done.stderr
        password = password_file.read_text()
        shown = subprocess.run(envflow_command("config"), env=env, capture_output=True, text=True).stdout
        assert f"redis://:***@127.0.0.1:{port}/0" in shown
        assert not any(password in text for text in [shown, log.read_text(), *redis_server_cmdlines()])
        found = modes(state / "redis")
        assert found.pop(".") == 0o700 and found and all(m in (0o600, 0o700) for m in found.values()), found
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert any(name.startswith("appendonly") for name in found), found  # the AOF: 0600 like the rest
    finally:
        stop_up(proc)
    assert not (state / "redis" / "password").exists()


def test_up_passes_a_percent_encoded_password_decoded(env_vars, workdir, tmp_path):
    port = free_port()
    state = tmp_path / "up-state"
    (state / "redis").mkdir(parents=True)
    (state / "redis" / "old.aof").write_text("from an earlier version")
    (state / "redis" / "old.aof").chmod(0o644)
    env = {**os.environ, **env_vars, "ENVFLOW_REDIS_URL": f"redis://:p%40ss%3Aw%20rd@127.0.0.1:{port}/0",
           "ENVFLOW_STATE_DIR": str(state)}
    proc = start_up(env, workdir, tmp_path / "up.log")
    try:
        assert redis.Redis(port=port, password="p@ss:w rd").ping()
        assert not (state / "redis" / "password").exists()  # the user's own password is not copied anywhere
        assert modes(state / "redis")["old.aof"] == 0o600 and modes(state / "redis")["."] == 0o700
    finally:
        stop_up(proc)


SNOOP = """
    import json, os
    from envflow import flow

    @flow
    def snoop():
        # What a flow of the same user can read of every other process: environments and command lines.
        found, denied = {}, []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            for entry in ("environ", "cmdline"):
                try:
                    with open(f"/proc/{pid}/{entry}", "rb") as f:
                        text = f.read().decode(errors="replace")
                except OSError:
                    denied.append(int(pid))
                    continue
                if "REDIS" in text.upper():
                    found[f"{pid}/{entry}"] = text
        print(json.dumps({"found": found, "denied": denied}))
"""

NO_CAPABILITIES = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]  # as a flow runs


def without_redis_url(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.upper() != "ENVFLOW_REDIS_URL"}


def test_up_starts_its_own_redis_by_default_and_its_password_reaches_no_flow(env_vars, workdir, venv, tmp_path):
    state = tmp_path / "up-state"
    env = {**without_redis_url({**os.environ, **env_vars}), "ENVFLOW_STATE_DIR": str(state)}
    log = tmp_path / "up.log"
    proc = subprocess.Popen([*NO_CAPABILITIES, *envflow_command("up", "--workers", "1")], cwd=workdir, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_until(lambda: "ready on queue" in log.read_text() or proc.poll() is not None, 30, what="envflow up")
    try:
        assert proc.poll() is None, log.read_text()
        record = json.loads((state / "redis" / "password").read_text())
        assert record["port"] != 6379 and f"127.0.0.1:{record['port']}" in log.read_text()  # not localhost:6379's
        password = record["password"]
        # Other envflow commands with this state dir (and no ENVFLOW_REDIS_URL) find that Redis.
        write_flow(workdir, SNOOP, "snoop.py")
        (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: snoop.py\n  virtualenv: {venv}\n")
        subprocess.run(envflow_command("deployment", "create", "d.yaml"), cwd=workdir, env=env, check=True,
                       capture_output=True)
        done = subprocess.run(envflow_command("deployment", "run", "snoop/d", "--follow"),
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        snooped = json.loads(done.stdout)
        assert password not in done.stdout, "the flow found the password in another process"
        scheduler = next(p for p in psutil.Process(proc.pid).children() if "scheduler" in p.cmdline())
        assert proc.pid in snooped["denied"] and scheduler.pid in snooped["denied"]  # not dumpable
        # The credential holders are out of its reach (not dumpable); the password is in no environment,
        # command line or file of the stack but the state dir's password file.
        stack = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
        for pid in stack:
            for entry in ("environ", "cmdline"):
                assert password not in Path(f"/proc/{pid}/{entry}").read_bytes().decode(errors="replace"), (pid, entry)
        assert not [p for p in state.rglob("*") if p.is_file() and p.name != "password"
                    and password.encode() in p.read_bytes()]
        assert not (state / "redis" / "envflow-redis.conf").exists()
        # From another state dir: refused, and told where `up` keeps the password.
        elsewhere = {**env, "ENVFLOW_STATE_DIR": str(tmp_path / "other"),
                     "ENVFLOW_REDIS_URL": f"redis://127.0.0.1:{record['port']}/0"}
        refused = subprocess.run(envflow_command("run", "ls"), env=elsewhere, capture_output=True, text=True)
        assert refused.returncode != 0 and "refused the credentials" in refused.stderr, refused.stderr
        assert "<state dir>/redis/password" in refused.stderr and ".;" not in refused.stderr, refused.stderr
    finally:
        stop_up(proc)
    assert not (state / "redis" / "password").exists()


def test_up_uses_a_redis_it_did_not_start_only_when_told(env_vars, redis_url, workdir, tmp_path):
    state = tmp_path / "up-state"
    env = {**without_redis_url({**os.environ, **env_vars}), "ENVFLOW_STATE_DIR": str(state)}
    log = tmp_path / "up.log"
    proc = subprocess.Popen(envflow_command("up", "--workers", "1", "--no-scheduler", "--redis-url", redis_url),
                            cwd=workdir, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_until(lambda: "ready on queue" in log.read_text() or proc.poll() is not None, 30, what="envflow up")
    try:
        assert proc.poll() is None, log.read_text()
        assert "using the Redis that answers at" in log.read_text()
        assert not (state / "redis").exists()  # nothing started, no password made
        assert redis.Redis.from_url(redis_url).keys("rq:worker:*")  # its worker registered there
    finally:
        stop_up(proc)
    helped = subprocess.run(envflow_command("up", "--help"), env=env, capture_output=True, text=True).stdout
    assert "--redis-url" in helped and "localhost:6379" in helped
