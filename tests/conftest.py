"""Shared fixtures: a real redis-server on a free loopback port, real venvs, real worker processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from envflow.client import Client
from envflow.deployments import Deployment
from envflow.settings import Settings

REDIS_SERVER = shutil.which("redis-server")
IN_CI = bool(os.environ.get("CI"))
# A run submitted before any worker is up warns (EnvflowWarning); tests that do so on purpose filter it.
NO_WORKER_YET = r"ignore:run [0-9a-f]+. waiting. no live worker on queue:envflow.errors.EnvflowWarning"


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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        if IN_CI:
            pytest.fail("redis-server is not on PATH (scripts/test installs it)")
        pytest.skip("redis-server is not on PATH: install it (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def env_vars(redis_url: str, workdir: Path, tmp_path: Path) -> dict[str, str]:
    """ENVFLOW_* settings every process of a test shares (client, workers, scheduler)."""
    return {
        "ENVFLOW_REDIS_URL": redis_url,
        "ENVFLOW_STATE_DIR": str(tmp_path / "state"),
        "ENVFLOW_ENV_ROOTS": os.pathsep.join([str(tmp_path), str(VENV_ROOT)]),
        "ENVFLOW_HEARTBEAT_INTERVAL": "0.5",
        "ENVFLOW_LEASE_TTL": "3",
        "ENVFLOW_REAPER_INTERVAL": "0.5",
        "ENVFLOW_CANCEL_GRACE": "2",
    }


@pytest.fixture
def settings(env_vars: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env_vars.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.fixture
def client(settings: Settings) -> Client:
    return Client(settings=settings)


VENV_ROOT = Path(os.environ.get("ENVFLOW_TEST_VENVS", "/tmp/envflow-test-venvs"))


def make_venv(name: str, python: str = sys.executable) -> Path:
    """A real venv (no pip, made once per machine and reused), under VENV_ROOT."""
    path = VENV_ROOT / name
    if not (path / "pyvenv.cfg").is_file() or not (path / "bin" / "python").exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def venv() -> Path:
    return make_venv(f"py{sys.version_info.major}{sys.version_info.minor}")


def write_flow(directory: Path, source: str, name: str = "flows.py") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def load_flows(path: Path) -> dict:
    """Import a flow file as a module (as a deployment file would) and return its namespace."""
    import runpy

    from envflow import flows

    sys.path.insert(0, str(path.parent))
    try:
        with flows.loading():
            return runpy.run_path(str(path), run_name=f"test_{path.stem}")
    finally:
        sys.path.remove(str(path.parent))


def deploy(client: Client, path: Path, flow: str, name: str = "test", **fields) -> str:
    """Register a deployment of the flow ``flow`` (function name) in ``path``; return its full name."""
    namespace = load_flows(path)
    record = client.create_deployment(Deployment(name=name, flow=namespace[flow], **fields))
    return record.name


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


@pytest.fixture
def start_worker(env_vars: dict[str, str], workdir: Path, tmp_path: Path) -> Iterator:
    workers: list[WorkerProcess] = []

    def start(*args: str, extra_env: dict[str, str] | None = None, wait_ready: bool = True,
              cwd: Path | None = None) -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers)}.log"
        env = {**os.environ, **env_vars, **(extra_env or {})}
        handle = open(log, "wb")
        proc = subprocess.Popen(
            envflow_command("worker", "start", *args), cwd=cwd or workdir, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
        worker = WorkerProcess(proc, log)
        workers.append(worker)
        if wait_ready:
            deadline = time.monotonic() + 20
            while "ready on queue" not in worker.output():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{worker.output()}")
                time.sleep(0.02)
        return worker

    yield start
    for worker in workers:
        worker.stop(signal.SIGKILL if worker.proc.poll() is None else signal.SIGTERM, timeout=10)


def make_conda_prefix(
    path: Path,
    env_vars: dict[str, str] | None = None,
    scripts: dict[str, str] | None = None,
    python: str = sys.executable,
    deactivate_scripts: dict[str, str] | None = None,
    package_env_vars: dict[str, dict[str, str]] | None = None,
) -> Path:
    """A directory in conda's on-disk layout around a real interpreter.

    conda cannot be installed here, so the interpreter comes from a venv of ``python``
    (so that sys.prefix is the prefix, as in a real conda env), and the conda metadata
    (conda-meta/history, conda-meta/state with config vars, a python-*.json record,
    etc/conda/activate.d and deactivate.d scripts, packages' etc/conda/env_vars.d/*.json)
    is written as conda writes it.
    """
    subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True)
    version = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True, check=True, text=True,
    ).stdout.strip()
    meta = path / "conda-meta"
    meta.mkdir()
    (meta / "history").write_text(f"==> 2026-01-01 00:00:00 <==\n# cmd: conda create -p {path} python={version}\n")
    (meta / f"python-{version}-h0_0_cpython.json").write_text(json.dumps({"name": "python", "version": version}))
    if env_vars is not None:
        (meta / "state").write_text(json.dumps({"env_vars": env_vars}))
    for folder, files in (("activate.d", scripts), ("deactivate.d", deactivate_scripts)):
        for name, text in (files or {}).items():
            (path / "etc" / "conda" / folder).mkdir(parents=True, exist_ok=True)
            (path / "etc" / "conda" / folder / name).write_text(textwrap.dedent(text))
    for name, variables in (package_env_vars or {}).items():
        (path / "etc" / "conda" / "env_vars.d").mkdir(parents=True, exist_ok=True)
        (path / "etc" / "conda" / "env_vars.d" / name).write_text(json.dumps(variables))
    return path
