"""compose.ha.yaml on the real engine: the primary's container is killed while runs print, the
replica takes over, and every envflow service follows it (docs/high-availability.md)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
import redis

from envflow.client import Client
from envflow.deployments import Deployment
from envflow.models import RunState
from envflow.settings import Settings

from ..support.flows import PRINTER, load_flows, write_flow
from .stack import HA, Stack, free_port

SERVICE = "envflow"


@pytest.fixture(scope="module")
def ha(built: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`docker compose -f compose.yaml -f compose.ha.yaml up -d` (plus the suite's host overrides)."""
    ports = {"REDIS_REPLICA_PORT": str(free_port()), **{f"SENTINEL_PORT_{i}": str(free_port()) for i in (1, 2, 3)}}
    stack = Stack(built.command, tmp_path_factory.mktemp("ha"), env=ports, files=HA)
    stack.compose("up", "--detach", "--no-build", timeout=900)
    try:
        stack.wait_for_workers(1)
        yield stack
    finally:
        for service in ("redis", "redis-replica", "sentinel-1", "worker", "scheduler"):
            sys.stderr.write(f"--- {service} log (last lines)\n{stack.logs(service)[-3000:]}\n")
        stack.down()


def sentinel_ports(stack: Stack) -> list[int]:
    return [int(stack.extra_env[f"SENTINEL_PORT_{i}"]) for i in (1, 2, 3)]


def sentinel_url(stack: Stack) -> str:
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinel_ports(stack))
    return f"redis+sentinel://:{stack.password}@{hosts}/{SERVICE}/0?failover_timeout=60"


def primary_port(stack: Stack) -> int:
    sentinel = redis.Redis(port=sentinel_ports(stack)[0], socket_timeout=5)
    return int(sentinel.sentinel_get_master_addr_by_name(SERVICE)[1])


def wait_until_sentinels_know_the_replica(stack: Stack, timeout: float = 60) -> None:
    """Until every Sentinel lists the replica as up: they find replicas in the primary's INFO, every
    10 s, and a failover before that finds no replica to promote."""
    deadline = time.monotonic() + timeout
    sentinels = [redis.Redis(port=port, socket_timeout=5) for port in sentinel_ports(stack)]
    while True:
        replicas = [s.sentinel_slaves(SERVICE) for s in sentinels]
        if all(any("s_down" not in r["flags"] and "disconnected" not in r["flags"] for r in found) for found in replicas):
            return
        assert time.monotonic() < deadline, f"the Sentinels do not know the replica: {replicas}"
        time.sleep(1)


def test_the_primary_container_killed_mid_run(ha: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert primary_port(ha) == ha.port
    wait_until_sentinels_know_the_replica(ha)
    client = Client(settings=Settings(redis_url=sentinel_url(ha)))
    flows = load_flows(write_flow(tmp_path, PRINTER))
    name = client.create_deployment(Deployment(name="ha", flow=flows["printer"], condaenv="py312")).name
    runs = [client.run(name, {"tag": f"r{i}", "pause": 0.2}) for i in range(2)]
    deadline = time.monotonic() + 120
    while runs[0].state is not RunState.RUNNING:
        assert time.monotonic() < deadline, runs[0].record()
        time.sleep(0.5)
    time.sleep(2)
    ha.compose("kill", "redis")  # SIGKILL the primary's container
    for run in runs:
        assert run.wait(240) is RunState.COMPLETED, run.record()
        lines = list(client.get_run(run.id).follow(timeout=60))
        last = max(line.attempt for line in lines)
        tag = run.record().parameters["tag"]
        assert [x.text for x in lines if x.attempt == last and " line " in x.text] == [f"{tag} line {i}" for i in range(40)]
    assert primary_port(ha) == int(ha.extra_env["REDIS_REPLICA_PORT"])  # the replica took over
    after = client.run(name, {"tag": "after", "n": 2, "pause": 0})
    assert after.wait(120) is RunState.COMPLETED
    for service in ("worker", "scheduler", "ui"):
        (container,) = ha.containers(service)
        container.reload()
        assert container.status == "running", (service, ha.logs(service)[-3000:])
