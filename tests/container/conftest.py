"""The container suite: builds the image with Docker Compose, brings compose.yaml's stack up under a
private project name, talks to it from the host through the published Redis port, tears it down.

Everything here skips with "no Docker engine (docker info failed)" where `docker info` fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
IMAGE = "envflow:container-test"
NO_ENGINE = "no Docker engine (docker info failed)"
SUITE_TIMEOUT = 2400  # seconds per test: the first one builds the image (conda envs take minutes)


def engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in item.path.parents]
    if not mine:
        return
    available = engine_available()
    for item in mine:
        item.add_marker(pytest.mark.timeout(SUITE_TIMEOUT) if available else pytest.mark.skip(reason=NO_ENGINE))


def env_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "envs").glob("*.yml"))


def compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin), or a standalone docker-compose (e.g. scripts/check-container's)."""
    candidates = [["docker", "compose"], [shutil.which("docker-compose") or ""],
                  [str(ROOT / ".venv-tools" / "bin" / "docker-compose")]]
    for command in candidates:
        if not command[0]:
            continue
        try:
            if subprocess.run([*command, "version"], capture_output=True, timeout=30).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


class Stack:
    """compose.yaml under a private project name, a free Redis port, a random password and its own venvs dir."""

    def __init__(self, command: list[str], workdir: Path) -> None:
        import docker

        self.command = command
        self.project = f"envflow-test-{os.getpid()}"
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self.venvs = workdir / "venvs"
        self.venvs.mkdir(mode=0o755)
        self.venvs.chmod(0o755)  # the workers (uid 10001) must be able to read it
        self.env_file = workdir / "empty.env"  # a developer's .env must not change the stack under test
        self.env_file.write_text("")
        self.docker = docker.from_env()

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_PASSWORD": self.password,
            "REDIS_PORT": str(self.port),
            "ENVFLOW_IMAGE": IMAGE,
            "ENVFLOW_VENVS_DIR": str(self.venvs),
            "ENVFLOW_VENVS_USER": f"{os.getuid()}:{os.getgid()}",
            "ENVFLOW_PROJECT_DIR": str(ROOT),
        }

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "--project-name", self.project, "--env-file", str(self.env_file),
                "-f", str(ROOT / "compose.yaml"), *args]
        done = subprocess.run(argv, cwd=ROOT, env=self.environ(), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def containers(self, service: str, all: bool = False) -> list[Any]:  # noqa: A002 - docker SDK's name
        labels = [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]
        return self.docker.containers.list(all=all, filters={"label": labels})

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False).stdout

    def client(self):  # type: ignore[no-untyped-def]
        from envflow.client import Client
        from envflow.settings import Settings

        return Client(settings=Settings(redis_url=self.redis_url))

    def wait_for_workers(self, count: int, timeout: float = 120) -> None:
        import redis
        from rq import Worker

        from envflow.jobs import SERIALIZER

        connection = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(Worker.all(connection=connection, serializer=SERIALIZER)) == count:
                    return
            except redis.RedisError:
                pass
            time.sleep(1)
        raise AssertionError(f"{count} workers did not register within {timeout}s:\n{self.logs('worker')}")

    def envflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The host's envflow CLI against the stack's published Redis port."""
        env = {**os.environ, "ENVFLOW_REDIS_URL": self.redis_url}
        return subprocess.run([sys.executable, "-m", "envflow", *args], env=env, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="session")
def compose_cmd() -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose (neither `docker compose` nor docker-compose works)")
    return command


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    docker = pytest.importorskip("docker", reason="the docker SDK is not installed (pip install -e '.[test]')")
    return docker.from_env()


@pytest.fixture(scope="session")
def built(compose_cmd: list[str], docker_client, tmp_path_factory: pytest.TempPathFactory) -> Stack:  # type: ignore[no-untyped-def]
    """The image, built once per session from compose.yaml's build section (BuildKit)."""
    stack = Stack(compose_cmd, tmp_path_factory.mktemp("stack"))
    stack.compose("build", "worker", timeout=SUITE_TIMEOUT)
    return stack


@pytest.fixture(scope="session")
def image(built: Stack, docker_client):  # type: ignore[no-untyped-def]
    return docker_client.images.get(IMAGE)


@pytest.fixture(scope="module")
def stack(built: Stack) -> Iterator[Stack]:
    """The stack, up: redis, scheduler, one worker, the venvs one-shot; torn down (with volumes) after."""
    built.compose("up", "--detach", "--no-build")
    try:
        built.wait_for_workers(1)
        yield built
    finally:
        for service in ("scheduler", "worker", "venvs"):
            sys.stderr.write(f"--- {service} log (last lines)\n{built.logs(service)[-6000:]}\n")
        built.compose("down", "--volumes", "--remove-orphans", "--timeout", "70", check=False)


def write_flow(directory: Path, source: str, name: str = "flows.py") -> Path:
    import textwrap

    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def read_env_file(name: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "envs" / f"{name}.yml").read_text())


def run_json(container_output: bytes) -> Any:
    return json.loads(container_output.decode().strip().splitlines()[-1])
