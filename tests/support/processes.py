"""The processes tests start and watch: a private redis-server, envflow's commands and workers, and
checks on process trees (flows that journal their processes, survivors, overlaps)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

REDIS_SERVER = shutil.which("redis-server")
IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server process; stop() and start() keep its port and data directory."""

    def __init__(self, directory: Path, *extra: str, tls_dir: Path | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.extra = extra
        self.tls_dir = tls_dir  # holds ca.crt, server.crt, server.key: serve TLS only
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        password = self._password()
        auth = f":{password}@" if password else ""
        if self.tls_dir is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_dir / 'ca.crt'}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER
        ports = ["--port", str(self.port)]
        if self.tls_dir is not None:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
                     "--tls-cert-file", str(self.tls_dir / "server.crt"),
                     "--tls-key-file", str(self.tls_dir / "server.key"),
                     "--tls-ca-cert-file", str(self.tls_dir / "ca.crt")]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *ports, "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "no", "--daemonize", "no", *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def _password(self) -> str | None:
        if "--requirepass" in self.extra:
            return self.extra[self.extra.index("--requirepass") + 1]
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def envflow_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "envflow", *args]

# A flow that records each attempt's start and end (with its pid and the pid of a child it
# starts) in a shared journal, so tests can prove no run ran twice at once and nothing survived.
JOURNALED = """
    import fcntl, json, os, subprocess, sys, time
    from envflow import flow

    JOURNAL = {journal!r}

    def note(event, **extra):
        with open(JOURNAL, "a") as f:
            f.write(json.dumps({{"event": event, "run": os.environ.get("RUN_TAG", ""), "pid": os.getpid(),
                                "t": time.time(), **extra}}) + "\\n")

    @flow
    def work(tag: str = "", seconds: float = 0.0, lines: int = 0, child: bool = False):
        os.environ["RUN_TAG"] = tag
        # Held until this process dies: a second attempt of the same run alive at once cannot take it.
        lock = open(JOURNAL + "." + tag + ".lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            overlap = False
        except BlockingIOError:
            overlap = True
        kid = subprocess.Popen(["sleep", "300"]) if child else None
        note("start", child=kid.pid if kid else None, overlap=overlap)
        print(f"started {{tag}}", flush=True)
        for i in range(lines):
            print(f"{{tag}} line {{i}}", flush=True)
        time.sleep(seconds)
        note("end")
        print(f"done {{tag}}")
        return tag
"""


def journal_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def survivors(events: list[dict]) -> list[int]:
    """Pids (flows and the children they started) from a journal that are still alive."""
    pids = set()
    for e in events:
        pids.add(e["pid"])
        if e.get("child"):
            pids.add(e["child"])
    return sorted(p for p in pids if alive(p))


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def no_overlap(events: list[dict]) -> None:
    """Assert no attempt found another attempt of its run still alive (see the lock in JOURNALED)."""
    overlapping = [e for e in events if e["event"] == "start" and e.get("overlap")]
    assert not overlapping, f"attempts started while an earlier attempt of the same run was alive: {overlapping}"


# Runs a command as a flow really runs: no capabilities at all. As root, CAP_SYS_PTRACE and
# CAP_DAC_OVERRIDE would open every /proc entry and every 0600 file whatever envflow does.
CAPLESS = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--")
