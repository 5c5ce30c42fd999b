"""compose.yaml as a new user meets it: a fresh clone and `docker compose up --build`, the image
built once, the classic builder, and the suite's own way of adding override files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .stack import BUILD_TIMEOUT, IMAGE, README_UP, ROOT, Stack, compose_files

CLONE_OWNER = (1000, 1000)  # a developer's uid, not root and not the image's 10001


def fresh_clone(destination: Path) -> Path:
    """The checkout's files as `git clone` would give them (tracked and new, nothing ignored),
    owned by a developer's uid when the suite runs as root."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    assert not (destination / "venvs").exists() and not (destination / ".env").exists()
    if os.getuid() == 0:
        for path in [destination, *destination.rglob("*")]:
            os.chown(path, *CLONE_OWNER)
    destination.chmod(0o755)
    return destination


def dangling_envflow_images(docker_client) -> set[str]:  # type: ignore[no-untyped-def]
    filters = {"dangling": True, "label": "org.opencontainers.image.title=envflow"}
    return {i.id for i in docker_client.images.list(filters=filters)}


def test_fresh_clone_up_build_works_the_first_time(built: Stack, docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """README's `docker compose up --build`, in the foreground, in a new clone with no .env and no
    venvs/: the example venv is made (Docker creates ./venvs as root) and belongs to the clone's
    owner, a worker comes up, no untagged copy of the image is left, and Ctrl-C stops it all."""
    clone = fresh_clone(tmp_path / "clone")
    tag = "envflow:fresh-clone-test"  # its own tag: replacing the suite's image would leave that one untagged
    stack = Stack(built.command, tmp_path, project_dir=clone, venvs=False, env={"ENVFLOW_IMAGE": tag})
    before = dangling_envflow_images(docker_client)
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(stack.argv(*README_UP), cwd=clone, env=stack.environ(), stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while not stack.containers("venvs", all=True) and up.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        venvs = stack.containers("venvs", all=True)
        assert venvs, log.read_text()[-4000:]
        assert stack.exit_status("venvs") == 0, stack.logs("venvs")
        assert (clone / "venvs" / "example" / "pyvenv.cfg").is_file()
        if os.getuid() == 0:
            owner = (clone / "venvs").stat()
            assert (owner.st_uid, owner.st_gid) == CLONE_OWNER
            assert (clone / "venvs" / "example" / "pyvenv.cfg").stat().st_uid == CLONE_OWNER[0]
        stack.wait_for_workers(1)
        assert dangling_envflow_images(docker_client) <= before, "a build left an untagged copy of the image"
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=120) is not None
        for service in ("redis", "scheduler", "worker", "ui"):
            assert stack.containers(service) == [], f"{service} still runs after Ctrl-C"
        worker = stack.containers("worker", all=True)[0]
        assert worker.attrs["State"]["ExitCode"] == 0, worker.attrs["State"]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=30)
        stack.down()
        if docker_client.images.list(name=tag):
            docker_client.images.remove(tag)


def test_one_service_builds_the_image(built: Stack) -> None:
    """Every envflow service runs one image, and only one of them builds it."""
    config = json.loads(built.compose("config", "--format", "json").stdout)
    services = config["services"]
    envflow = {name for name, s in services.items() if s.get("image") == IMAGE}
    builders = {name for name, s in services.items() if s.get("build")}
    assert {"scheduler", "worker", "venvs", "ui"} <= envflow
    assert builders == {"worker"}, f"services that build: {sorted(builders)}"


def test_the_classic_builder_builds_without_the_dashboard_base(docker_client) -> None:  # type: ignore[no-untyped-def]
    """Without BuildKit every stage of a Dockerfile is built; the default build must not need the
    dashboard's base image (no registry answers here)."""
    base = os.environ.get("ENVFLOW_BASE_IMAGE")
    if not base:
        pytest.skip("ENVFLOW_BASE_IMAGE is not set (scripts/test-container sets it)")
    tag = "envflow:classic-builder-test"
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    done = subprocess.run(["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, "."],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert docker_client.images.get(tag).attrs["Config"]["Cmd"] == ["envflow", "worker", "start"]


def test_override_files_are_added_in_order(built: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENVFLOW_TEST_COMPOSE_FILES adds files after the suite's own override; the last one wins."""
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("services:\n  worker:\n    environment:\n      ENVFLOW_LOG_LEVEL: DEBUG\n      EXTRA: first\n")
    second.write_text("services:\n  worker:\n    environment:\n      EXTRA: second\n")
    monkeypatch.setenv("ENVFLOW_TEST_COMPOSE_FILES", f"{first}:{second}")
    assert compose_files()[-2:] == [first, second]
    stack = Stack(built.command, tmp_path)
    worker = json.loads(stack.compose("config", "--format", "json").stdout)["services"]["worker"]
    assert worker["environment"]["ENVFLOW_LOG_LEVEL"] == "DEBUG" and worker["environment"]["EXTRA"] == "second"
    assert worker["network_mode"] == "host"  # the suite's override is still there


def test_no_network_is_created(built: Stack, docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Host networking only: bringing the stack up creates no network at all."""
    before = {n.name for n in docker_client.networks.list()}
    stack = Stack(built.command, tmp_path)
    try:
        stack.compose("up", "--detach", "--no-build", "redis")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stack.containers("redis"):
            time.sleep(1)
        assert {n.name for n in docker_client.networks.list()} == before
        for container in stack.containers("redis"):
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    finally:
        stack.down()
