"""The container suite: builds the image with Docker Compose from compose.yaml plus the suite's
host-network override (tests/container/stack.py), brings the stack up under a private project
name, talks to it from the host through Redis on loopback, tears it down.

It needs a Docker engine and the images scripts/test-container builds (the offline stand-ins),
so it runs only when that script asks for it (ENVFLOW_CONTAINER_TESTS=1) and skips elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .stack import BUILD_TIMEOUT, IMAGE, ROOT, Stack, compose_command

HERE = Path(__file__).resolve().parent
NOT_ASKED = "the container suite runs through scripts/test-container (ENVFLOW_CONTAINER_TESTS=1)"
NO_ENGINE = "no Docker engine (docker info failed)"
SUITE_TIMEOUT = 900  # seconds per test; the build is its own step of scripts/test-container


def engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in item.path.parents]
    if not mine:
        return
    reason = None if os.environ.get("ENVFLOW_CONTAINER_TESTS") == "1" else NOT_ASKED
    if reason is None and not engine_available():
        reason = NO_ENGINE
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=reason) if reason else pytest.mark.timeout(SUITE_TIMEOUT))


def env_names() -> list[str]:
    return sorted(p.stem for p in (ROOT / "envs").glob("*.yml"))


@pytest.fixture(scope="session")
def compose_cmd() -> list[str]:
    command = compose_command()
    if command is None:
        pytest.fail("no Docker Compose (neither `docker compose` nor docker-compose works)")
    return command


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    import docker

    return docker.from_env()


@pytest.fixture(scope="session")
def built(compose_cmd: list[str], docker_client, tmp_path_factory: pytest.TempPathFactory) -> Stack:  # type: ignore[no-untyped-def]
    """The image, built through compose.yaml's build section (a no-op when scripts/test-container built it)."""
    stack = Stack(compose_cmd, tmp_path_factory.mktemp("stack"))
    stack.compose("build", timeout=BUILD_TIMEOUT)
    return stack


@pytest.fixture(scope="session")
def image(built: Stack, docker_client):  # type: ignore[no-untyped-def]
    return docker_client.images.get(IMAGE)


def run_in_image(docker_client, *command: str, image: str = IMAGE, **options: Any) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Run ``command`` in a new container of ``image`` on the host network; (exit status, stdout).

    The output is read from the stopped container's log before it is removed. The SDK's
    ``containers.run(..., remove=True)`` reads it while Docker 20.10 may already be removing the
    container, and came back empty about one time in three.
    """
    container = docker_client.containers.create(image, list(command), network_mode="host", **options)
    try:
        container.start()
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs(stdout=True, stderr=False).decode()
    finally:
        container.remove(force=True)


def output_of(docker_client, *command: str, **options: Any) -> str:  # type: ignore[no-untyped-def]
    status, out = run_in_image(docker_client, *command, **options)
    assert status == 0, (command, status, out)
    return out


@pytest.fixture(scope="module")
def stack(built: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, up: redis, scheduler, one worker, the venvs one-shot; torn down (with volumes) after."""
    stack = Stack(built.command, tmp_path_factory.mktemp("up"))
    stack.compose("up", "--detach", "--no-build")
    try:
        stack.wait_for_workers(1)
        yield stack
    finally:
        for service in ("scheduler", "worker", "venvs", "ui"):
            sys.stderr.write(f"--- {service} log (last lines)\n{stack.logs(service)[-6000:]}\n")
        stack.down()


def read_env_file(name: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "envs" / f"{name}.yml").read_text())
