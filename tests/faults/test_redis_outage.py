"""Redis stopped and restarted while a flow prints: the flow keeps running, no line is lost or doubled."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import redis

from envflow.client import Client
from envflow.models import RunState

from ..support.flows import deploy, write_flow
from ..support.processes import RedisServer, wait_until

PRINTER = """
    import time
    from envflow import flow

    @flow
    def printer(n: int = 400, pause: float = 0.01):
        for i in range(n):
            print(f"line {i}", flush=True)
            time.sleep(pause)
        return n
"""


@pytest.fixture
def durable_redis(tmp_path):
    server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    (tmp_path / "aof").mkdir()
    server.start()
    yield server
    server.stop()


def test_outage_mid_run_loses_nothing(durable_redis, env_vars, settings, start_worker, venv, workdir):
    env_vars["ENVFLOW_REDIS_URL"] = durable_redis.url
    env_vars["ENVFLOW_LEASE_TTL"] = "20"  # longer than the outage: the run must not be reaped meanwhile
    client = Client(settings=settings.model_copy(update={"redis_url": durable_redis.url, "lease_ttl": 20.0}))
    name = deploy(client, write_flow(workdir, PRINTER), "printer", virtualenv=str(venv))
    worker = start_worker()
    run = client.run(name)
    live: list[str] = []
    follower = threading.Thread(target=lambda: live.extend(line.text for line in run.follow(timeout=90)))
    follower.start()
    wait_until(lambda: len(live) >= 50, 20, what="output to flow")
    durable_redis.stop()
    time.sleep(2)  # the flow goes on printing into the worker's buffer
    durable_redis.start()
    assert run.wait(60) is RunState.COMPLETED
    follower.join(30)
    expected = [f"line {i}" for i in range(400)]
    late = [line.text for line in client.get_run(run.id).follow(timeout=30)]
    assert late == expected
    assert live == expected
    assert run.result() == 400
    assert worker.proc.poll() is None  # the worker rode out the outage
    assert "lost Redis while streaming output" in worker.output()


@pytest.fixture
def full_redis(tmp_path):
    (tmp_path / "full").mkdir()
    server = RedisServer(tmp_path / "full", "--maxmemory-policy", "noeviction")
    server.start()
    yield server
    server.stop()


def test_redis_out_of_memory_stops_no_worker(full_redis, env_vars, settings, start_worker, venv, workdir):
    env_vars["ENVFLOW_REDIS_URL"] = full_redis.url
    env_vars.update(ENVFLOW_LEASE_TTL="30", ENVFLOW_HEARTBEAT_INTERVAL="0.5", ENVFLOW_REAPER_INTERVAL="0.5")
    client = Client(settings=settings.model_copy(update={"redis_url": full_redis.url, "lease_ttl": 30.0}))
    name = deploy(client, write_flow(workdir, PRINTER), "printer", virtualenv=str(venv))
    busy, idle = start_worker(), start_worker()
    run = client.run(name, {"n": 300, "pause": 0.01})
    wait_until(lambda: client.redis.xlen(f"envflow:run:{run.id}:out") > 0, 20, what="output in Redis")
    client.pause_queue("default")
    later = client.run(name, {"n": 3, "pause": 0})
    used = int(client.redis.info("memory")["used_memory"])
    client.redis.config_set("maxmemory", used // 2)  # noeviction: every write is refused with OOM
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.redis.set("probe", "x" * 100_000)
    client.resume_queue("default")  # SREM frees memory, so it is allowed: the idle worker pops the run
    time.sleep(4)  # the flow ends meanwhile; heartbeats, dequeues, claims, maintenance and the end all meet OOM
    assert busy.proc.poll() is None and idle.proc.poll() is None, busy.output() + idle.output()
    client.redis.config_set("maxmemory", 0)
    assert run.wait(60) is RunState.COMPLETED
    assert [line.text for line in run.follow(timeout=30)] == [f"line {i}" for i in range(300)]
    assert later.wait(60) is RunState.COMPLETED
    assert client.run(name, {"n": 3, "pause": 0}).wait(60) is RunState.COMPLETED  # both still take runs
    assert busy.proc.poll() is None and idle.proc.poll() is None, busy.output() + idle.output()
    assert "maxmemory" in busy.output() and "cannot start it yet: Redis refuses writes" in idle.output()


def test_workers_register_again_after_redis_loses_its_data(client, env_vars, start_worker, venv, workdir):
    worker = start_worker()
    health = [sys.executable, "-m", "envflow", "worker", "health"]
    env = {**os.environ, **env_vars}

    def healthy() -> bool:
        return subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0

    wait_until(healthy, 20, what="a healthy worker")
    client.redis.flushall()  # as a Redis restarted without persistence
    wait_until(healthy, 20, interval=0.5, what="the worker registered again")
    name = deploy(client, write_flow(workdir, PRINTER), "printer", virtualenv=str(venv))
    assert client.run(name, {"n": 2, "pause": 0}).wait(60) is RunState.COMPLETED
    assert "registering again" in worker.output()
