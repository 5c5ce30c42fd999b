"""A Sentinel-watched Redis for tests: a primary, a replica and three ``redis-server --sentinel``, on loopback."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from .processes import REDIS_SERVER, RedisServer, free_port

SERVICE = "envflow"
DOWN_AFTER_MS = 1000  # how soon Sentinel calls a silent primary down: keeps the failover tests short


class SentinelCluster:
    """Data nodes and Sentinels, started together; ``kill_primary`` SIGKILLs the current primary."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        for name in ("a", "b"):
            (directory / name).mkdir(parents=True, exist_ok=True)
        self.nodes = [RedisServer(directory / "a"), RedisServer(directory / "b")]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0?failover_timeout=20"

    def start(self) -> None:
        primary, replica = self.nodes
        primary.extra = ("--repl-diskless-sync-delay", "0")  # the replica is in sync at once, not in 5 s
        primary.start()
        replica.extra = ("--replicaof", "127.0.0.1", str(primary.port))
        replica.start()
        for i, port in enumerate(self.sentinel_ports):
            conf = self.directory / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            self.sentinels.append(subprocess.Popen([str(REDIS_SERVER), str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.wait_ready()

    def sentinel_client(self, i: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[i], socket_timeout=2)

    def primary_port(self) -> int:
        return int(self.sentinel_client().sentinel_get_master_addr_by_name(SERVICE)[1])

    def wait_ready(self, timeout: float = 20) -> None:
        """Until the replica is in sync and every Sentinel knows the primary, the replica and the other two."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [self.sentinel_client(i).sentinel_master(SERVICE) for i in range(3)]
                synced = redis.Redis(port=self.primary_port()).info("replication").get("slave0", {})
                if synced.get("state") == "online" and all(
                        s["num-slaves"] >= 1 and s["num-other-sentinels"] >= 2 for s in states):
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the Sentinels did not see each other and the replica in time")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the node that is primary now; return it."""
        port = self.primary_port()
        node = next(n for n in self.nodes if n.port == port)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        return node

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Until the Sentinels name a primary other than ``old_port``; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                port = self.primary_port()
                if port != old_port:
                    return port
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("no failover happened in time")

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        for node in self.nodes:
            node.stop()
