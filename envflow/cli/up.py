"""``envflow up``: the whole stack in one terminal, for development or a machine without Docker."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import redis

from .. import private_redis
from ..redaction import redact_url
from ..redis_url import given_redis_url
from ..sentinel import is_sentinel_url
from ..settings import get_settings
from ..undumpable import make_undumpable
from .base import fail, status

COLORS = ["cyan", "green", "magenta", "yellow", "blue", "bright_cyan", "bright_green", "bright_magenta"]


class Child:
    def __init__(self, name: str, color: str, argv: list[str], env: dict[str, str], width: int,
                 umask: int = -1, stdin_text: str | None = None) -> None:
        self.name = name
        self.prefix = click.style(f"{name.ljust(width)} |", fg=color)
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `up` only; it stops the children in order
            umask=umask,
        )
        if stdin_text is not None:  # what only this child may read (redis-server's config), through a pipe
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin_text.encode())
            self.proc.stdin.close()
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            click.echo(f"{self.prefix} {raw.decode(errors='replace').rstrip()}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


def answers(url: str) -> bool:
    if is_sentinel_url(url):
        return True  # never replaced by a private Redis: the services follow the Sentinels' primary
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping()
        return True
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False
    except redis.exceptions.RedisError:
        return True  # it answers, e.g. with an auth error the services will report


def redis_server_for(url: str) -> str:
    """The redis-server to start for ``url``, or a one-line error saying why none can be."""
    if private_redis.local_port(url) is None:
        fail(f"nothing answers at {redact_url(url)}; `envflow up` starts a private Redis only for a "
             "redis://localhost URL: start that server, or unset ENVFLOW_REDIS_URL")
    server = shutil.which("redis-server")
    if server is None:
        fail(f"nothing answers at {redact_url(url)} and there is no redis-server on PATH to start one: "
             "install it (apt-get install redis-server / brew install redis)")
    return server


def free_local_url() -> str:
    """A ``redis://`` URL on a loopback port nothing listens on now, for a private Redis."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"


def start_private_redis(url: str, state_dir: Path, env: dict[str, str], width: int) -> tuple[Child, str, bool]:
    """Start redis-server for ``url``: data in a 0700 directory, files 0600, a password always.

    :returns: the child, the URL to reach it (with its password) and whether the password is envflow's own.
    """
    server = redis_server_for(url)
    data_dir, password, generated = private_redis.prepare(state_dir, url)
    private_redis.remove_stale_config(data_dir)
    # The config, password included, goes through a pipe: on no command line and in no file.
    argv = [server, "-", "--bind", "127.0.0.1", "--port", str(private_redis.local_port(url)),
            "--dir", str(data_dir), "--appendonly", "yes", "--save", ""]
    child = Child("redis", "red", argv, env, width, umask=0o077,  # its files (the AOF) are 0600
                  stdin_text=private_redis.config_text(password))
    return child, private_redis.with_password(url, password), generated


@click.command("up")
@click.option("--workers", "-w", type=click.IntRange(min=0), default=1, show_default=True, help="Workers to start.")
@click.option("--queue", "-q", "queues", multiple=True, help="Queues the workers serve (repeatable).")
@click.option("--no-scheduler", is_flag=True, help="Do not start the scheduler.")
@click.option("--redis-url", help="Use this Redis (default: ENVFLOW_REDIS_URL); a redis://localhost URL where "
              "nothing answers gets a private Redis on its port.")
def up(workers: int, queues: tuple[str, ...], no_scheduler: bool, redis_url: str | None) -> None:
    """Run the stack here: a private Redis, the scheduler and workers.

    Without --redis-url or ENVFLOW_REDIS_URL it always starts a private Redis on a free loopback
    port, with a generated password, whatever else answers on localhost:6379; envflow commands
    with the same ENVFLOW_STATE_DIR (and no ENVFLOW_REDIS_URL) find it. Given a URL, it uses the
    Redis there, or starts the private one on that URL's local port when nothing answers.

    Output of every process is shown with a colored prefix. Ctrl-C stops the workers
    gracefully (running flows get ENVFLOW_SHUTDOWN_GRACE seconds), then the scheduler and
    Redis; a second Ctrl-C stops everything at once.
    """
    make_undumpable()  # it holds the Redis password: out of its flows' reach before they exist
    settings = get_settings()
    state_dir = settings.state_dir.expanduser()
    told = redis_url or given_redis_url()
    url = private_redis.completed_url(state_dir, told) if told else None
    env = {**os.environ, "ENVFLOW_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"}
    names = ["redis", "scheduler", *[f"worker-{i + 1}" for i in range(workers)]]
    width = max(len(n) for n in names)
    started: list[Child] = []
    redis_child = None
    generated = False
    if url is not None and answers(url):
        status(f"using the Redis that answers at {redact_url(url)}")
        env["ENVFLOW_REDIS_URL"] = url
    else:
        running = private_redis.saved_record(state_dir)
        if running is not None and told is None:
            fail(f"another `envflow up` (pid {running.get('pid')}) runs with the state dir {state_dir}: stop it, or "
                 "give this one another ENVFLOW_STATE_DIR")
        # redis-server stays dumpable (exec resets it): it gets no Redis URL or credential in its environment.
        server_env = {k: v for k, v in env.items() if not k.upper().startswith(("ENVFLOW_REDIS", "REDIS"))}
        redis_child, url, generated = start_private_redis(url or free_local_url(), state_dir, server_env, width)
        # The children find a generated password where other commands do (the state dir), so that
        # it is in no environment; a password of the user's own is in theirs already.
        env["ENVFLOW_REDIS_URL"] = private_redis.without_password(url) if generated else url
        deadline = time.monotonic() + 15
        while not answers(url):
            if redis_child.proc.poll() is not None or time.monotonic() > deadline:
                if generated:
                    private_redis.forget_password(state_dir)
                fail(f"redis-server did not start (exit status {redis_child.proc.poll()}); see its output above")
            time.sleep(0.05)
        where = private_redis.data_dir(state_dir)
        if generated:
            status(f"started a private Redis at {redact_url(url)} (data in {where}); its password is in "
                   f"{private_redis.password_file(state_dir)}, readable by you only, and envflow "
                   f"commands with ENVFLOW_STATE_DIR={state_dir} use it")
        else:
            status(f"started a private Redis at {redact_url(url)} (data in {where})")
    envflow = [sys.executable, "-m", "envflow"]
    if not no_scheduler:
        started.append(Child("scheduler", COLORS[0], [*envflow, "scheduler", "start"], env, width))
    queue_args = [a for q in queues for a in ("--queue", q)]
    for i in range(workers):
        started.append(Child(f"worker-{i + 1}", COLORS[(i + 1) % len(COLORS)],
                             [*envflow, "worker", "start", *queue_args], env, width))
    status("stack is up; Ctrl-C stops it")
    code = _supervise(started, settings.shutdown_grace + settings.cancel_grace + 5)
    if redis_child is not None:
        redis_child.signal(signal.SIGTERM)
        redis_child.proc.wait(15)
        if generated:
            private_redis.forget_password(state_dir)
    status("stack stopped")
    sys.exit(code)


def _supervise(children: list[Child], grace: float) -> int:
    """Wait until Ctrl-C/SIGTERM or a child dies; then stop all children. Returns the exit code."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    failed = None
    try:
        while not stop.wait(0.2):
            failed = next((c for c in children if c.proc.poll() is not None), None)
            if failed is not None:
                status(f"{failed.name} exited with status {failed.proc.returncode}; stopping the stack")
                break
        stop.clear()
        status("stopping (Ctrl-C again to stop at once)")
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(c.proc.poll() is None for c in children):
            if stop.is_set() or time.monotonic() > deadline:
                for child in children:
                    child.signal(signal.SIGKILL)
            time.sleep(0.05)
        for child in children:
            child.reader.join(timeout=2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if failed is not None else 0
