"""Shared fixtures: a real redis-server on a free loopback port, real venvs, real worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from envflow.client import Client
from envflow.settings import Settings

from .support.processes import IN_CI, REDIS_SERVER, RedisServer, WorkerProcess, envflow_command
from .support.pythons import VENV_ROOT, make_venv


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
def state_dir() -> Iterator[Path]:
    """A worker state dir outside /tmp, as the image's /var/lib/envflow is: flows cannot make new
    entries in the directories above a state dir (its sandbox), and flows of tests write in /tmp."""
    base = Path(tempfile.mkdtemp(prefix="envflow-state-", dir="/var/tmp"))
    yield base / "state"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env_vars(redis_url: str, workdir: Path, tmp_path: Path, state_dir: Path) -> dict[str, str]:
    """ENVFLOW_* settings every process of a test shares (client, workers, scheduler)."""
    return {
        "ENVFLOW_REDIS_URL": redis_url,
        "ENVFLOW_STATE_DIR": str(state_dir),
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


@pytest.fixture(scope="session")
def venv() -> Path:
    return make_venv(f"py{sys.version_info.major}{sys.version_info.minor}")


@pytest.fixture
def start_worker(env_vars: dict[str, str], workdir: Path, tmp_path: Path) -> Iterator:
    workers: list[WorkerProcess] = []

    def start(*args: str, extra_env: dict[str, str] | None = None, wait_ready: bool = True,
              cwd: Path | None = None, prefix: tuple[str, ...] = ()) -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers)}.log"
        env = {**os.environ, **env_vars, **(extra_env or {})}
        handle = open(log, "wb")
        proc = subprocess.Popen(
            [*prefix, *envflow_command("worker", "start", *args)], cwd=cwd or workdir, env=env, stdout=handle, stderr=subprocess.STDOUT
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


