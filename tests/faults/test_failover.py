"""The Redis primary SIGKILLed under load, behind Sentinel: every process follows the failover to the replica.

One cluster per test (a primary, a replica, three Sentinels on loopback; ``tests/support/sentinels.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from envflow.client import Client
from envflow.errors import QueueError
from envflow.models import RunState
from envflow.schedules import Interval

from ..support.flows import PRINTER, deploy, write_flow
from ..support.processes import REDIS_SERVER, envflow_command, wait_until
from ..support.sentinels import SentinelCluster
from ..ui.helpers import UIProcess

LINES = 40


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    servers = SentinelCluster(tmp_path / "ha")
    servers.start()
    yield servers
    servers.stop()


def last_attempt_lines(client: Client, run_id: str) -> list[str]:
    lines = list(client.get_run(run_id).follow(timeout=30))
    last = max(line.attempt for line in lines)
    return [line.text for line in lines if line.attempt == last and not line.text.startswith("envflow:")]


def test_primary_killed_mid_load(cluster, env_vars, settings, start_worker, venv, workdir, tmp_path):
    env_vars["ENVFLOW_REDIS_URL"] = cluster.url
    env_vars["ENVFLOW_LEASE_TTL"] = "20"  # longer than the failover: running attempts keep their lease
    client = Client(settings=settings.model_copy(update={"redis_url": cluster.url, "lease_ttl": 20.0}))
    name = deploy(client, write_flow(workdir, PRINTER), "printer", virtualenv=str(venv))
    workers = [start_worker(), start_worker()]
    runs = [client.run(name, {"tag": f"r{i}"}) for i in range(6)]
    follower_out = tmp_path / "follower.txt"
    with open(follower_out, "wb") as out:
        follower = subprocess.Popen(envflow_command("run", "logs", "-f", runs[0].id), stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **env_vars})
    wait_until(lambda: runs[0].state is RunState.RUNNING, 20, what="the first run to start")
    time.sleep(2.5)

    # Client.run() in a loop through the outage: every id it returns must survive; a failure is a QueueError.
    submitted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def submit() -> None:
        while not stop.is_set() and len(submitted) + len(refused) < 200:
            began = time.monotonic()
            try:
                submitted.append(client.run(name, {"tag": f"s{len(submitted)}", "n": 1, "pause": 0}).id)
            except QueueError as e:
                refused.append(f"{time.monotonic() - began:.1f}s {e}")
            time.sleep(0.05)

    loop = threading.Thread(target=submit)
    loop.start()
    old = cluster.kill_primary()
    killed_at = time.monotonic()
    cluster.wait_failover(old.port)
    switched_in = time.monotonic() - killed_at
    time.sleep(1)
    stop.set()
    loop.join(60)
    assert not loop.is_alive()
    assert all(float(r.split("s ")[0]) <= 25 for r in refused), refused  # within the URL's failover_timeout

    after = client.run(name, {"tag": "after", "n": 3, "pause": 0})
    assert after.wait(60) is RunState.COMPLETED
    for run in runs:
        assert run.wait(60) is RunState.COMPLETED, run.record()
        tag = run.record().parameters["tag"]
        assert last_attempt_lines(client, run.id) == [f"{tag} line {i}" for i in range(LINES)]
    for run_id in submitted:
        assert client.get_run(run_id).wait(60) is RunState.COMPLETED
    follower.wait(30)
    seen = [line for line in follower_out.read_text().splitlines() if " line " in line]
    tag = runs[0].record().parameters["tag"]
    expected = [f"{tag} line {i}" for i in range(LINES)]
    # Every line, in order; an attempt retried after the failover shows its lines again, complete.
    assert seen[-LINES:] == expected and set(seen) == set(expected), "|".join(seen)
    assert all(w.proc.poll() is None for w in workers)  # no worker exited for the failover
    print(f"failover: Sentinel named the new primary {switched_in:.1f}s after the kill; {len(submitted)} runs submitted, "
          f"{len(refused)} refused: {refused}")


def health(ui: UIProcess) -> int:
    try:
        with urllib.request.urlopen(ui.base + "/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def test_scheduler_and_ui_through_a_failover(cluster, env_vars, settings, start_worker, venv, workdir, tmp_path):
    env_vars["ENVFLOW_REDIS_URL"] = cluster.url
    env_vars["ENVFLOW_LEASE_TTL"] = "20"
    client = Client(settings=settings.model_copy(update={"redis_url": cluster.url, "lease_ttl": 20.0}))
    name = deploy(client, write_flow(workdir, PRINTER), "printer", virtualenv=str(venv), schedule=Interval(seconds=1),
                  parameters={"n": 1, "pause": 0}, missed_runs="catch_up")
    start_worker()
    env = {**os.environ, **env_vars}
    with open(tmp_path / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen(envflow_command("scheduler", "start", "--tick", "0.2"), env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
    ui = UIProcess(env_vars, workdir, tmp_path / "ui.log")
    try:
        wait_until(lambda: len(client.runs(name, limit=100)) >= 3, 20, what="scheduled runs")
        switched: list[float] = []  # when a Sentinel announced the new primary (+switch-master)
        announcements = redis.Redis(port=cluster.sentinel_ports[0]).pubsub()  # no socket timeout: it waits
        announcements.subscribe("+switch-master")

        def listen() -> None:
            for message in announcements.listen():
                if message["type"] == "message":
                    switched.append(time.monotonic())
                    return

        threading.Thread(target=listen, daemon=True).start()
        probe_client = Client(settings=client.settings)
        first_line: list[float] = []

        def probe() -> None:  # a run submitted at the kill: its first line, against Sentinel's own time
            run = probe_client.run(name, {"tag": "probe", "n": 1, "pause": 0})
            next(iter(run.follow(timeout=60)))
            first_line.append(time.monotonic())

        old = cluster.kill_primary()
        killed_at = time.monotonic()
        prober = threading.Thread(target=probe)
        prober.start()
        during = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (cluster.primary_port() == old.port or len(during) < 3):
            during.append(health(ui))
            time.sleep(0.2)
        assert 503 in during, during  # unhealthy while no primary answers, said at once
        wait_until(lambda: health(ui) == 200, 30, what="/healthz to be 200 again")
        with urllib.request.urlopen(ui.base + "/metrics", timeout=10) as response:
            assert response.status == 200
        prober.join(60)
        print(f"failover: +switch-master {switched[0] - killed_at:.2f}s after the kill; the first line of a run "
              f"submitted at the kill {first_line[0] - killed_at:.2f}s after it")
        after_switch = time.time()
        wait_until(lambda: any(r.scheduled_for and r.scheduled_for > after_switch + 2 and r.state is RunState.COMPLETED
                               for r in client.runs(name, limit=200)), 30, what="a slot after the failover to run")
    finally:
        scheduler.terminate()
        scheduler.wait(20)
        ui.stop()
    slots = sorted(r.scheduled_for for r in client.runs(name, limit=500) if r.scheduled_for)
    assert len(slots) == len(set(slots)), "a slot was enqueued twice"
    dropped = [a for a, b in zip(slots, slots[1:]) if b - a > 1.5]
    print(f"scheduler: {len(slots)} slots, {len(dropped)} gap(s) after {dropped}")
    assert not dropped  # catch_up: the slots of the outage are enqueued late, none skipped
    assert scheduler.returncode == 0


def test_a_pipeline_cut_mid_call_finds_the_new_primary(cluster, tmp_path):
    """A pipeline whose connection drops mid-call is retried on that connection: it must ask the
    Sentinels again, not reconnect to the address it had (the dead primary) until the bound runs out."""
    from envflow.connection import connect

    client = connect(cluster.url)
    killer = threading.Timer(0.5, cluster.kill_primary)
    old = cluster.primary_port()
    killer.start()  # while the pipeline's BLPOP waits on the primary
    began = time.monotonic()
    with client.pipeline(transaction=False) as pipe:
        assert pipe.blpop(["nothing"], timeout=2).execute() == [None]
    took = time.monotonic() - began
    killer.join()
    assert cluster.primary_port() != old
    assert took < 15, f"{took:.1f}s: retried against the dead primary"  # the URL's bound is 20 s


def test_lines_lost_in_the_replication_lag_are_sent_again(cluster, env_vars, settings, start_worker, venv, workdir):
    """The replica is cut off (stopped, its link closed) while the flow prints, then the primary is
    killed: the replica promoted lacks lines the old primary acknowledged, and the writer sends them again."""
    env_vars["ENVFLOW_REDIS_URL"] = cluster.url
    env_vars["ENVFLOW_LEASE_TTL"] = "20"
    client = Client(settings=settings.model_copy(update={"redis_url": cluster.url, "lease_ttl": 20.0}))
    name = deploy(client, write_flow(workdir, PRINTER), "printer", virtualenv=str(venv))
    worker = start_worker()
    run = client.run(name, {"tag": "lag"})
    wait_until(lambda: len(list(client.get_run(run.id).follow(timeout=0.2))) >= 10, 20, what="the first lines")
    primary = redis.Redis(port=cluster.primary_port())
    replica = next(n for n in cluster.nodes if n.port != cluster.primary_port())
    replica.proc.send_signal(signal.SIGSTOP)
    try:
        primary.client_kill_filter(_type="slave")  # what the primary writes from now on, the replica never gets
        time.sleep(0.7)  # lines acknowledged by the primary alone
    finally:
        old = cluster.kill_primary()
        replica.proc.send_signal(signal.SIGCONT)
    cluster.wait_failover(old.port)
    assert run.wait(60) is RunState.COMPLETED, run.record()
    assert last_attempt_lines(client, run.id) == [f"lag line {i}" for i in range(LINES)]
    assert "lacks output it had acknowledged" in worker.output()
