"""``redis+sentinel://`` URLs: parsed in one place, shown redacted, and every process reaches Sentinel's primary."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from envflow.client import Client
from envflow.connection import connect, describe
from envflow.errors import EnvflowWarning, QueueError
from envflow.sentinel import DEFAULT_SENTINEL_PORT, FAILOVER_TIMEOUT, SentinelURL
from envflow.settings import Settings
from envflow.store.protocol import Beat

from .support.flows import deploy, write_flow
from .support.processes import REDIS_SERVER, envflow_command
from .support.runs import claim, register
from .support.sentinels import SentinelCluster


def test_parse_full_url() -> None:
    url = SentinelURL.parse("redis+sentinel://app:p%40ss@s1:26380,s2,[::1]:26381/main/3"
                            "?sentinel_password=sp&ssl=true&failover_timeout=5")
    assert url.sentinels == (("s1", 26380), ("s2", DEFAULT_SENTINEL_PORT), ("::1", 26381))
    assert (url.service, url.db, url.username, url.password) == ("main", 3, "app", "p@ss")
    assert (url.sentinel_password, url.ssl, url.failover_timeout) == ("sp", True, 5.0)


def test_parse_defaults_and_password_only() -> None:
    url = SentinelURL.parse("redis+sentinel://:secret@s1:26379/main")
    assert (url.username, url.password, url.db, url.ssl) == (None, "secret", 0, False)
    assert url.failover_timeout == FAILOVER_TIMEOUT and url.sentinel_password is None


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://s1:26379", "no service name"),
    ("redis+sentinel://s1:26379/", "no service name"),
    ("redis+sentinel://s1:port/main", "invalid port"),
    ("redis+sentinel://s1:1,,s2:2/main", "is empty"),
    ("redis+sentinel://:hidden@s1/main/x", "/SERVICE or /SERVICE/DB"),
    ("redis+sentinel://s1/main?master=x", "unknown parameter(s) master"),
    ("redis+sentinel://s1/main?ssl=maybe", "not true or false"),
    ("redis+sentinel://s1/main?failover_timeout=0", "positive number of seconds"),
])
def test_malformed_url_is_one_clear_line(url: str, says: str) -> None:
    with pytest.raises(QueueError) as caught:
        connect(url)
    message = str(caught.value)
    assert says in message and "\n" not in message and "hidden" not in message


def test_config_redacts_both_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVFLOW_REDIS_URL", "redis+sentinel://app:datapw@s1:1,s2:2/main?sentinel_password=sentpw")
    shown = Settings().redacted()["redis_url"]
    assert shown == "redis+sentinel://app:***@s1:1,s2:2/main?sentinel_password=***"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    servers = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    servers.start()
    yield servers
    servers.stop()


def test_client_works_on_the_primary(cluster: SentinelCluster, tmp_path: Path) -> None:
    client = Client(settings=Settings(redis_url=cluster.url, state_dir=tmp_path))
    assert client.runs() == []
    assert f":{cluster.primary_port()}" in describe(client.redis)


def test_config_check_reports_sentinels_primary_and_replicas(cluster: SentinelCluster, tmp_path: Path) -> None:
    env = {**os.environ, "ENVFLOW_REDIS_URL": cluster.url, "ENVFLOW_STATE_DIR": str(tmp_path)}
    done = subprocess.run(envflow_command("config", "--check", "--json"), env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["redis sentinels reached"] == [f"127.0.0.1:{p}" for p in cluster.sentinel_ports]
    assert found["redis primary"] == f"127.0.0.1:{cluster.primary_port()}"
    assert found["redis role"] == "master"
    replica = next(n for n in cluster.nodes if n.port != cluster.primary_port())
    assert [r.split(" ")[0] for r in found["redis replicas"]] == [f"127.0.0.1:{replica.port}"]


def test_config_check_names_a_wrong_service(cluster: SentinelCluster, tmp_path: Path) -> None:
    url = cluster.url.replace("/envflow/", "/nosuch/")
    env = {**os.environ, "ENVFLOW_REDIS_URL": url, "ENVFLOW_STATE_DIR": str(tmp_path)}
    done = subprocess.run(envflow_command("config", "--check"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "names a healthy primary" in done.stderr and "Traceback" not in done.stderr


HELLO = """
    from envflow import flow

    @flow
    def hello():
        return 1
"""


def waits_sent(client: Client) -> int:
    return int(client.redis.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def test_run_creation_waits_for_a_replica(cluster: SentinelCluster, tmp_path: Path, venv: Path) -> None:
    client = Client(settings=Settings(redis_url=cluster.url, state_dir=tmp_path))
    name = deploy(client, write_flow(tmp_path, HELLO), "hello", virtualenv=str(venv))
    before = waits_sent(client)
    run = client.run(name)
    assert waits_sent(client) == before + 1
    assert client.store.replicas.wait("again") == 1  # the replica confirmed
    replica = next(n for n in cluster.nodes if n.port != cluster.primary_port())
    assert redis.Redis(port=replica.port).exists(f"envflow:run:{run.id}")


def test_too_few_replicas_warn_within_the_timeout(cluster: SentinelCluster, tmp_path: Path, venv: Path) -> None:
    settings = Settings(redis_url=cluster.url, state_dir=tmp_path, redis_wait_replicas=2, redis_wait_timeout=0.2)
    client = Client(settings=settings)
    name = deploy(client, write_flow(tmp_path, HELLO), "hello", virtualenv=str(venv))
    with pytest.warns(EnvflowWarning, match="1 of 2 replica"):
        client.run(name)


def test_plain_redis_sends_no_wait(client: Client, tmp_path: Path, venv: Path) -> None:
    name = deploy(client, write_flow(tmp_path, HELLO), "hello", virtualenv=str(venv))
    before = waits_sent(client)
    client.run(name)
    assert waits_sent(client) == before


def test_a_demoted_primary_is_left_for_the_new_one(cluster: SentinelCluster, tmp_path: Path) -> None:
    """(Last of the module: it leaves the cluster resyncing.) A graceful failover keeps the old primary alive as a replica: a connection still open to it
    meets READONLY, is dropped and made again to the new primary; its scripts are loaded again there."""

    client = Client(settings=Settings(redis_url=cluster.url, state_dir=tmp_path))
    register(client)
    run_id = client.store.create(client.get_deployment("flow/dep"), {})
    claimed = claim(client, run_id)
    client.redis.set("before", 1)  # a pooled connection to this primary stays open
    old = cluster.primary_port()
    cluster.sentinel_client().execute_command("SENTINEL", "FAILOVER", "envflow")
    cluster.wait_failover(old)
    deadline = time.monotonic() + 20  # until Sentinel has told the old primary to replicate the new one
    while redis.Redis(port=old).info("replication")["role"] != "slave":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.redis.set("after", 1)  # READONLY on the old connection, then the new primary
    assert client.store.scripts.heartbeat(run_id, claimed.attempt, "w1").run() is Beat.GO  # NOSCRIPT, loaded again
    assert f":{cluster.primary_port()}" in describe(client.redis)
