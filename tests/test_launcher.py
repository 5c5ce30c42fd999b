"""Interpreters started one run ahead: reused only for an identical next run, never stale."""

from __future__ import annotations

import sys
import time

from envflow.models import RunState
from envflow.worker.launcher import Launcher

from .conftest import deploy, write_flow
from .faults.helpers import alive


def test_warm_interpreter_is_used_only_for_the_same_key(venv):
    launcher = Launcher()
    python, env = venv / "bin" / "python", {"PATH": "/usr/bin:/bin"}
    first = launcher.launch(python, env, ("a",))
    launcher.prepare_next(python, env, ("a",))
    assert launcher.warm is None  # one run is not a pattern
    second = launcher.launch(python, env, ("a",))
    launcher.prepare_next(python, env, ("a",))
    warm = launcher.warm
    assert warm is not None and warm.proc.poll() is None
    third = launcher.launch(python, env, ("a",))
    assert third is warm and launcher.hits == 1
    launcher.prepare_next(python, env, ("a",))
    stale = launcher.warm
    other = launcher.launch(python, {"PATH": "/bin"}, ("b",))
    assert other is not stale and launcher.misses == 1
    assert stale.proc.poll() is not None  # killed, not left waiting
    for flow in (first, second, third, other):
        flow.discard()
    launcher.close()


def test_a_package_installed_after_the_interpreter_started_is_seen(client, start_worker, workdir, tmp_path):
    import subprocess

    env_dir = tmp_path / "pthvenv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = next(env_dir.glob("lib/python3*/site-packages"))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "extra_mod.py").write_text("VALUE = 'installed'\n")
    flow = write_flow(workdir, """
        from envflow import flow

        @flow
        def probe():
            try:
                import extra_mod
                return extra_mod.VALUE
            except ImportError:
                return None
    """)
    name = deploy(client, flow, "probe", virtualenv=str(env_dir))
    worker = start_worker()
    assert [client.run(name).result(timeout=30) for _ in range(3)] == [None, None, None]
    time.sleep(0.05)
    (site / "extra.pth").write_text(f"{extra}\n")  # as `pip install -e` does
    assert client.run(name).result(timeout=30) == "installed"
    assert client.run(name).wait(30) is RunState.COMPLETED
    warm = worker_children(worker.pid)
    assert warm  # the next run's interpreter, waiting
    worker.stop()
    assert not any(alive(p) for p in warm)  # a stopping worker takes it down


def worker_children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_stale_cache_files_are_pruned(tmp_path):
    import os

    import redis

    from envflow.protocol import RunScripts
    from envflow.settings import Settings
    from envflow.worker.env_cache import EnvCache
    from envflow.worker.executor import Executor

    settings = Settings(state_dir=tmp_path)
    unused_redis = redis.Redis.from_url("redis://127.0.0.1:1/0")  # never contacted here
    executor = Executor("w", settings, RunScripts(unused_redis, settings), EnvCache(settings))
    old = executor.sources.dir / "abc" / "flow.py"
    new = executor.sources.dir / "def" / "flow.py"
    for path in (old, new):
        path.parent.mkdir(parents=True)
        path.write_text("x")
    os.utime(old, (1, 1))
    assert executor.sources.prune() == 1
    assert not old.parent.exists() and new.exists()
