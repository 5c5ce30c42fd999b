"""The benchmark's world: a private redis-server, a venv, flow files, envflow and RQ workers.

Everything lives under one temporary directory (venvs under a reusable cache directory)
and talks over loopback to a redis-server on a free port; ``close()`` stops it all.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from envflow.client import Client
from envflow.deployments import Deployment
from envflow.settings import Settings

from .flowfiles import FlowFiles
from .procs import Child

REPO = Path(__file__).resolve().parent.parent
QUEUE = "bench"  # envflow deployments and workers
RQ_QUEUE = "bench-rq"  # the raw-RQ baseline: "bench-rq-default" and "bench-rq-simple", one per worker class
HISTORY_MAX_LINES = 2_000_000  # keeps a 1M-line run's whole history, for the replay case
READY_TIMEOUT = 60.0


def rq_queue(kind: str) -> str:
    """The queue the raw-RQ workers of one class (``default`` or ``simple``) serve."""
    return f"{RQ_QUEUE}-{kind}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "envflow-bench"


def make_venv(path: Path, python: str = sys.executable) -> Path:
    """A venv without pip at ``path`` (made once, reused while its interpreter works)."""
    if not (path / "pyvenv.cfg").is_file() or not (path / "bin" / "python").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return path


def base_environ() -> dict[str, str]:
    """The benchmark's own environment minus anything that would configure envflow or Python."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ENVFLOW_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }


class Harness:
    """Owns the redis-server, the workers and the files of one benchmark run."""

    def __init__(self, root: Path, cache_dir: Path, log=print) -> None:  # type: ignore[no-untyped-def]
        self.root = root
        self.cache_dir = cache_dir
        self.log = log
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        (root / "work").mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis_server: Child | None = None
        self.redis: redis.Redis | None = None
        self.envflow_workers: list[Child] = []
        self.rq_workers: dict[str, list[Child]] = {"default": [], "simple": []}
        self.files = FlowFiles(root)
        self.wheelhouse = root / "wheels"
        self._venv: Path | None = None
        self._client: Client | None = None
        self._deployed: dict[str, str] = {}
        self._started = 0

    # Redis

    def start_redis(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not on PATH: install it (apt-get install redis-server)")
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        self.redis_server = Child(
            "redis-server",
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
            self.logs / "redis.log",
            base_environ(),
            self.root,
        )
        self.redis = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.redis.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or not self.redis_server.alive():
                    raise RuntimeError(f"redis-server did not start:\n{self.redis_server.output()}") from None
                time.sleep(0.02)

    def db_url(self, db: int) -> str:
        """The URL of another database of the same redis-server (cases that fill one keep the others clean)."""
        return self.url.rsplit("/", 1)[0] + f"/{db}"

    def command_calls(self) -> dict[str, int]:
        """Calls so far of each Redis command (``INFO commandstats``), scripts' inner calls included."""
        assert self.redis is not None
        stats = self.redis.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    def redis_log_count(self, text: str) -> int:
        """How many lines of redis-server's log contain ``text``."""
        assert self.redis_server is not None
        return sum(text in line for line in self.redis_server.output().splitlines())

    # Environments and settings

    @property
    def venv(self) -> Path:
        if self._venv is None:
            tag = f"py{sys.version_info.major}{sys.version_info.minor}"
            self._venv = make_venv(self.cache_dir / "venvs" / tag)
        return self._venv

    @property
    def venv_python(self) -> str:
        return str(self.venv / "bin" / "python")

    def envflow_environ(self) -> dict[str, str]:
        """``ENVFLOW_*`` settings every envflow process of the run shares."""
        roots = [self.root, self.cache_dir]
        return {
            "ENVFLOW_REDIS_URL": self.url,
            "ENVFLOW_QUEUE": QUEUE,
            "ENVFLOW_STATE_DIR": str(self.root / "state"),
            "ENVFLOW_ENV_ROOTS": os.pathsep.join(str(p.resolve()) for p in roots),
            "ENVFLOW_HISTORY_MAX_LINES": str(HISTORY_MAX_LINES),
            # Built envs (the "built" case) install from a wheelhouse the case writes, offline.
            "ENVFLOW_ENV_CACHE": str(self.root / "env-cache"),
            "ENVFLOW_PIP_FIND_LINKS": str(self.wheelhouse),
            "ENVFLOW_PIP_NO_INDEX": "1",
        }

    def settings(self, **overrides: object) -> Settings:
        values = {k.removeprefix("ENVFLOW_").lower(): v for k, v in self.envflow_environ().items()}
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(settings=self.settings())
        return self._client

    def deploy(self, flow: str) -> str:
        """Register a deployment of ``bench/flowfiles.py``'s flow ``flow`` in the venv; its full name."""
        if flow not in self._deployed:
            record = self.client.create_deployment(
                Deployment(
                    name="bench",
                    flow_location=str(self.files.path(flow)),
                    flow_name=flow,
                    virtualenv=str(self.venv),
                    stream_output=False,  # the worker's log does not echo a million lines
                )
            )
            self._deployed[flow] = record.name
        return self._deployed[flow]

    # Workers

    def use_workers(self, envflow: int = 0, rq_default: int = 0, rq_simple: int = 0) -> None:
        """Have exactly this many workers of each kind running (others are stopped; new ones start together)."""
        wanted = [
            (self.envflow_workers, envflow, self._start_envflow),
            (self.rq_workers["default"], rq_default, lambda: self._start_rq("default")),
            (self.rq_workers["simple"], rq_simple, lambda: self._start_rq("simple")),
        ]
        starting = []
        for pool, n, start in wanted:
            pool[:] = [w for w in pool if w.alive()]
            while len(pool) > n:
                pool.pop().stop()
            starting += [(pool, *start()) for _ in range(n - len(pool))]
        for pool, child, ready in starting:
            child.wait_for(ready, READY_TIMEOUT)
            pool.append(child)

    def _start_envflow(self) -> tuple[Child, str]:
        self._started += 1
        name = f"bench-envflow-{self._started}"
        env = {**base_environ(), **self.envflow_environ()}
        child = Child(
            name,
            [sys.executable, "-m", "envflow", "worker", "start", "--queue", QUEUE, "--name", name],
            self.logs / f"{name}.log",
            env,
            self.root / "work",
        )
        return child, "ready on queue"

    def _start_rq(self, kind: str) -> tuple[Child, str]:
        self._started += 1
        name = f"bench-rq-{kind}-{self._started}"
        child = Child(
            name,
            [sys.executable, "-m", "bench.rqworker", self.url, rq_queue(kind), kind, name],
            self.logs / f"{name}.log",
            base_environ(),
            REPO,
        )
        return child, "ready"

    def worker_names(self) -> list[str]:
        return [w.name for w in self.envflow_workers + self.rq_workers["default"] + self.rq_workers["simple"]]

    def wait_idle(self, timeout: float = 5.0, settle: float = 0.01) -> None:
        """Wait until every running worker says it is idle (back at its dequeue), then ``settle`` seconds."""
        assert self.redis is not None
        names = self.worker_names()
        deadline = time.monotonic() + timeout
        while names and time.monotonic() < deadline:
            with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hget(f"rq:worker:{name}", "state")
                states = pipe.execute()
            if all(s == b"idle" for s in states):
                break
            time.sleep(0.005)
        time.sleep(settle)

    def close(self) -> None:
        from .procs import stop_all

        if self._client is not None:
            self._client.redis.close()
        stop_all()
        self.envflow_workers.clear()
        for pool in self.rq_workers.values():
            pool.clear()
