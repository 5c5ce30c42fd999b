"""compose.yaml as the container suite runs it: the project's file plus the suite's override
(tests/container/compose.host.yaml: host networking, local images), then the files a stack adds
(the fleet's: compose.fleet.yaml and its host override), then any files named in
ENVFLOW_TEST_COMPOSE_FILES (``:``-separated), under a private project name, free Redis and UI
ports, a random password and UI token, and its own venvs directory.

``python -m tests.container.stack build`` builds the image exactly as the suite does
(scripts/test-container runs it as its own step, so the build is timed apart from the tests).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
IMAGE = os.environ.get("ENVFLOW_TEST_IMAGE", "envflow:container-test")
HOST_OVERRIDE = HERE / "compose.host.yaml"
# compose.fleet.yaml (workers with different envs) as the suite runs it: with its host-network override.
FLEET = (ROOT / "compose.fleet.yaml", HERE / "compose.fleet.host.yaml")
# compose.ha.yaml (a replica and three Sentinels) with the suite's Redis image for them.
HA = (ROOT / "compose.ha.yaml", HERE / "compose.ha.host.yaml")
BUILD_TIMEOUT = 2400  # a cold build makes the conda envs: minutes

# The commands of README.md's "Run with Docker", as the suite runs them (after `docker compose`;
# tests/test_container_static.py checks the README shows exactly these).
README_UP = ("up", "--build")
README_SCALE = ("up", "-d", "--scale", "worker=3")
README_VENV = ("run", "--rm", "venvs", "envflow", "venv", "create", "/venvs/myproject", "--python", "py312",
               "-r", "/project/examples/requirements.txt")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_files(added: tuple[Path, ...] = ()) -> list[Path]:
    """compose.yaml, the host-network override, ``added``, then ENVFLOW_TEST_COMPOSE_FILES in order."""
    extra = [Path(p).resolve() for p in os.environ.get("ENVFLOW_TEST_COMPOSE_FILES", "").split(":") if p]
    return [ROOT / "compose.yaml", HOST_OVERRIDE, *added, *extra]


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
    """One compose project of the suite. ``project_dir`` is the checkout compose runs in (this one,
    or a fresh clone); ``venvs`` None leaves ENVFLOW_VENVS_DIR at compose.yaml's default; ``files`` are
    override files added after the suite's own (e.g. ``FLEET``)."""

    def __init__(self, command: list[str], workdir: Path, project_dir: Path = ROOT,
                 venvs: Path | None | bool = True, env: dict[str, str] | None = None,
                 files: tuple[Path, ...] = ()) -> None:
        self.command = command
        self.files = tuple(files)
        self.project = f"envflow-test-{os.getpid()}-{secrets.token_hex(3)}"
        self.project_dir = project_dir
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self.ui_port = free_port()
        self.ui_token = secrets.token_hex(24)
        self.extra_env = env or {}
        if venvs is True:
            self.venvs = workdir / "venvs"
            self.venvs.mkdir(mode=0o755)
            self.venvs.chmod(0o755)  # the workers (uid 10001) must be able to read it
        else:
            self.venvs = project_dir / "venvs"
        self.own_venvs = venvs is True
        self.env_file = workdir / "empty.env"  # a developer's .env must not change the stack under test
        self.env_file.write_text("")
        self._docker: Any = None

    @property
    def docker(self) -> Any:
        if self._docker is None:
            import docker

            self._docker = docker.from_env()
        return self._docker

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def environ(self) -> dict[str, str]:
        env = {
            **os.environ,
            "REDIS_PASSWORD": self.password,
            "REDIS_PORT": str(self.port),
            "UI_PORT": str(self.ui_port),
            "ENVFLOW_UI_TOKEN": self.ui_token,
            "ENVFLOW_IMAGE": IMAGE,
            "ENVFLOW_PROJECT_DIR": str(self.project_dir),
            **self.extra_env,
        }
        if self.own_venvs:
            env["ENVFLOW_VENVS_DIR"] = str(self.venvs)
        else:
            env.pop("ENVFLOW_VENVS_DIR", None)
        return env

    def argv(self, *args: str) -> list[str]:
        """`docker compose ARGS...` for this project: its name, directory, files and an empty .env."""
        files = [a for f in compose_files(self.files) for a in ("-f", str(f if f.parent != ROOT else self.project_dir / f.name))]
        return [*self.command, "--project-name", self.project, "--project-directory", str(self.project_dir),
                "--env-file", str(self.env_file), *files, *args]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args)
        done = subprocess.run(argv, cwd=self.project_dir, env=self.environ(), capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def containers(self, service: str, all: bool = False) -> list[Any]:  # noqa: A002 - docker SDK's name
        labels = [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]
        return self.docker.containers.list(all=all, filters={"label": labels})

    def exit_status(self, service: str, timeout: float = 300) -> int:
        """The exit code of a one-shot service's container, once it has run. Docker's wait returns at once
        for a container compose has created but not yet started (it waits for the services it depends
        on), so this waits for the container to have exited instead."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.containers(service, all=True)
            if found and found[0].attrs["State"]["Status"] in ("exited", "dead"):
                return int(found[0].attrs["State"]["ExitCode"])
            assert time.monotonic() < deadline, f"{service} did not run to its end within {timeout}s"
            time.sleep(1)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service, check=False).stdout

    def client(self):  # type: ignore[no-untyped-def]
        from envflow.client import Client
        from envflow.settings import Settings

        return Client(settings=Settings(redis_url=self.redis_url))

    def worker_names(self) -> set[str]:
        import redis
        from rq import Worker

        from envflow.store.jobs import SERIALIZER

        with redis.Redis.from_url(self.redis_url) as connection:
            return {w.name for w in Worker.all(connection=connection, serializer=SERIALIZER)}

    def service_workers(self, service: str) -> set[str]:
        """The names of the workers the containers of ``service`` started (each logs "worker NAME ready").

        Under host networking the replicas of every service share the host's name, so a worker's
        name (``<hostname>.<slot>.<random>``) does not say which container it runs in; its log does.
        """
        import re

        return {name for container in self.containers(service, all=True)
                for name in re.findall(r"\bworker (\S+) ready on queue", container.logs().decode(errors="replace"))}

    def wait_for_workers(self, count: int, timeout: float = 120) -> set[str]:
        import redis

        deadline = time.monotonic() + timeout
        names: set[str] = set()
        while time.monotonic() < deadline:
            try:
                names = self.worker_names()
                if len(names) == count:
                    return names
            except redis.RedisError:
                pass
            time.sleep(1)
        raise AssertionError(f"{count} workers did not register within {timeout}s (saw {sorted(names)}):\n"
                             f"{self.logs('worker')[-4000:]}")

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "70", check=False, timeout=300)


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        sys.stderr.write("usage: python -m tests.container.stack build\n")
        return 2
    command = compose_command()
    if command is None:
        sys.stderr.write("no Docker Compose (neither `docker compose` nor docker-compose works)\n")
        return 1
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        done = Stack(command, Path(workdir)).compose("--progress", "plain", "build", check=False,
                                                     timeout=BUILD_TIMEOUT)
    sys.stderr.write(done.stderr[-6000:] if done.returncode else "")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
