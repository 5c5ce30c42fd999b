"""Ready processes of the warm pool: used only for their own key, never stale; cache pruning."""

from __future__ import annotations

import sys
import time

from envflow.models import RunState
from envflow.worker.warm import WarmPool

from .support.flows import deploy, write_flow
from .support.processes import alive, wait_until


def test_a_ready_process_serves_only_its_own_key(venv):
    pool = WarmPool(max_ready=4, idle=300)
    python, env = venv / "bin" / "python", {"PATH": "/usr/bin:/bin"}
    first = pool.launch(python, env, ("a",), (), "venv:a")
    assert first.how == "new"  # nothing was ready: started now, and the key made ready for the next run
    wait_until(lambda: pool.entries[("a",)].server.poll_ready(), 20, what="the ready process")
    second = pool.launch(python, env, ("a",), (), "venv:a")
    assert second.how == "fork" and second.proc.pid != first.proc.pid
    other = pool.launch(python, {"PATH": "/bin"}, ("b",), (), "venv:b")
    assert other.how == "new"  # another key never gets a's process
    server = pool.entries[("a",)].server.proc.pid
    newer = pool.launch(python, env, ("a-changed-on-disk",), (), "venv:a")  # same env and variables, new stamps
    assert newer.how == "new" and ("a",) not in pool.entries
    wait_until(lambda: not alive(server), 10, what="the stale ready process to go")
    for flow in (first, second, other, newer):
        flow.discard()
    pool.close()


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
    assert warm  # the env's ready process, waiting
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

    from envflow.settings import Settings
    from envflow.store.protocol import RunScripts
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
