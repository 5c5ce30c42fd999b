"""Redis behind Sentinel: the ``redis+sentinel://`` URL, parsed here only, and clients on its primary.

``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB][?query]``

- the hosts are the Sentinels; ``SERVICE`` is the name they monitor the primary under;
- the user and password are the data nodes' (the primary's and its replicas');
- query: ``sentinel_password`` (and ``sentinel_username``) when the Sentinels require one, ``ssl=true``
  for TLS to the data nodes, ``failover_timeout`` (seconds a call keeps retrying while the primary
  is away, default ``FAILOVER_TIMEOUT``) and ``socket_timeout`` (seconds, default none).

A client built here asks the Sentinels for the primary each time it connects (redis-py's
``SentinelConnectionPool``), and a connection to a node that was demoted (a READONLY reply) is
dropped and made again to the new primary. Every command that fails for a lost connection is
retried by redis-py's own ``Retry`` for about ``failover_timeout`` seconds, then raised: the
callers turn it into a ``QueueError`` (``connection.wrap_errors``).
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from .errors import QueueError

T = TypeVar("T")
SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
FAILOVER_TIMEOUT = 60.0  # seconds: more than a failover with Sentinel's defaults (down after 30 s, then the election)
RETRY_CAP = 0.5  # seconds between attempts at most, once the first short ones failed
CONNECT_TIMEOUT = 2.0  # seconds a connection attempt may take (a dead host on a real network)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
_QUERY = {"sentinel_password", "sentinel_username", "ssl", "failover_timeout", "socket_timeout"}


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Redis through Sentinel (``redis+sentinel://``)."""
    return url.lower().startswith(SCHEME + "://")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    ssl: bool = False
    failover_timeout: float = FAILOVER_TIMEOUT
    socket_timeout: float | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Parse ``url``; a malformed one raises a one-line ``QueueError`` saying what is wrong."""
        from .redaction import redact_url

        try:
            return cls._parse(url)
        except ValueError as e:
            raise QueueError(
                f"invalid Redis URL {redact_url(url)!r}: {e} (expected "
                f"{SCHEME}://[[user]:password@]host:port[,host:port...]/SERVICE[/DB][?sentinel_password=...])"
            ) from None

    @classmethod
    def _parse(cls, url: str) -> SentinelURL:
        if not is_sentinel_url(url):
            raise ValueError(f"the scheme is not {SCHEME}://")
        rest = url[len(SCHEME) + 3 :]
        rest, _, fragment = rest.partition("#")
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
            if not colon:  # a lone user part is a password, as redis-py reads redis://secret@host
                username, password = None, unquote(user) or None
        sentinels = tuple(_host_port(part) for part in hosts.split(","))
        parts = [p for p in path.split("/")]
        if not parts or not parts[0]:
            raise ValueError("no service name after the Sentinels (…/SERVICE)")
        if len(parts) > 2 or len(parts) == 2 and not parts[1].isdigit():
            raise ValueError(f"the path must be /SERVICE or /SERVICE/DB, not /{path}")
        values = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(values) - _QUERY)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(_QUERY))})")
        return cls(
            sentinels=sentinels,
            service=unquote(parts[0]),
            db=int(parts[1]) if len(parts) == 2 else 0,
            username=username,
            password=password,
            sentinel_username=values.get("sentinel_username") or None,
            sentinel_password=values.get("sentinel_password") or None,
            ssl=_flag("ssl", values.get("ssl", "")),
            failover_timeout=_seconds("failover_timeout", values.get("failover_timeout"), FAILOVER_TIMEOUT)
            or FAILOVER_TIMEOUT,
            socket_timeout=_seconds("socket_timeout", values.get("socket_timeout"), None),
        )

    def sentinel(self, **kwargs: Any) -> Sentinel:
        """redis-py's Sentinel manager for these Sentinels (they are asked for the primary on each connect)."""
        # No retry per Sentinel: a dead one is skipped for the next (redis-py asks each in turn).
        sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": CONNECT_TIMEOUT,
                                           "retry": Retry(NoBackoff(), 0)}
        if self.sentinel_password is not None:
            sentinel_kwargs["password"] = self.sentinel_password
        if self.sentinel_username is not None:
            sentinel_kwargs["username"] = self.sentinel_username
        return Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)

    def primary(self, **kwargs: Any) -> Redis:
        """A client on the service's current primary that follows failovers (see the module's docstring)."""
        kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT)
        if self.socket_timeout is not None:
            kwargs.setdefault("socket_timeout", self.socket_timeout)
        kwargs.setdefault("retry", failover_retry(self.failover_timeout))
        kwargs.setdefault("connection_class", PrimarySSLConnection if self.ssl else PrimaryConnection)
        return self.sentinel().master_for(
            self.service, db=self.db, username=self.username, password=self.password, **kwargs
        )


class PrimaryConnection(SentinelManagedConnection):
    """redis-py's connection to a Sentinel's primary, reconnected through the Sentinels on every path.

    In redis-py 7.4 a connection dropped inside a call (a pipeline's retry) is reconnected by
    ``send_packed_command`` through ``connect_check_health``, to the address it had: the dead
    primary, retried until the bound runs out. Here that path asks the Sentinels too (``connect``);
    ``connect_to``, which the Sentinel path itself uses, calls it with ``retry_socket_connect=False``.
    """

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        # The stubs lag redis-py 7: _sock and connect_check_health are there (redis/connection.py).
        if retry_socket_connect and not self._sock:  # type: ignore[attr-defined]
            self.connect()
            return
        super().connect_check_health(  # type: ignore[misc]
            check_health=check_health, retry_socket_connect=retry_socket_connect)


class PrimarySSLConnection(PrimaryConnection, SentinelManagedSSLConnection):
    """``PrimaryConnection`` over TLS."""


class FailoverRetry(Retry):
    """redis-py's ``Retry`` bounded by time rather than by count: lost connections are retried until
    ``timeout`` seconds have passed since the first failure.

    A time bound holds where a count does not: redis-py nests the connection's own retry (each
    connect asks the Sentinels, retried) inside the command's, and a nested call that used up the
    time leaves the outer one none. The delays double from 50 ms up to ``RETRY_CAP``: a failover is
    usually over within seconds, and each attempt asks the Sentinels afresh.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(ExponentialBackoff(cap=RETRY_CAP, base=0.05), retries=1_000_000,
                         supported_errors=(ConnectionError, TimeoutError, socket.timeout))
        self.timeout = timeout

    def call_with_retry(self, do: Callable[[], T], fail: Callable[..., Any],
                        is_retryable: Callable[[Exception], bool] | None = None,
                        with_failure_count: bool = False) -> T:
        deadline, failures = time.monotonic() + self.timeout, 0
        while True:
            try:
                return do()
            except self._supported_errors as error:  # type: ignore[attr-defined]  # AbstractRetry's, not stubbed
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                delay = self._backoff.compute(failures)  # type: ignore[attr-defined]
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)


def failover_retry(timeout: float) -> FailoverRetry:
    """The retry of a client on a Sentinel's primary: about ``timeout`` seconds of attempts."""
    return FailoverRetry(timeout)


def describe(client: Redis) -> str:
    """Where a Sentinel client connects, without credentials: its service, Sentinels and last primary."""
    pool = client.connection_pool
    manager = pool.sentinel_manager  # type: ignore[attr-defined]
    sentinels = ",".join("{host}:{port}".format_map(s.connection_pool.connection_kwargs) for s in manager.sentinels)
    primary = pool.master_address  # type: ignore[attr-defined]
    where = f", primary {primary[0]}:{primary[1]}" if primary else ""
    return f"service {pool.service_name!r} via Sentinel {sentinels}{where}"  # type: ignore[attr-defined]


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if not text:
        raise ValueError("a Sentinel address is empty (host:port[,host:port...])")
    if text.startswith("["):  # [ipv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"Sentinel address {text!r} has no host")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Sentinel address {text!r} has an invalid port")
    return host, int(port)


def _flag(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not true or false")


def _seconds(name: str, value: str | None, default: float | None) -> float | None:
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"{name}={value!r} is not a positive number of seconds")
    return seconds


@dataclass(frozen=True)
class Topology:
    """What the Sentinels of a URL say: which of them answered, the primary and its replicas."""

    reached: tuple[str, ...]
    unreachable: tuple[str, ...]
    primary: str | None
    replicas: tuple[str, ...]


def topology(url: SentinelURL) -> Topology:
    """Ask each Sentinel of ``url`` about its service (for ``envflow config --check``)."""
    manager = url.sentinel()
    reached: list[str] = []
    unreachable: list[str] = []
    primary: str | None = None
    replicas: tuple[str, ...] = ()
    for (host, port), node in zip(url.sentinels, manager.sentinels):
        try:
            state = node.sentinel_master(url.service)
        except (ConnectionError, TimeoutError):
            unreachable.append(f"{host}:{port}")
            continue
        except Exception:  # the Sentinel answered but does not know the service
            reached.append(f"{host}:{port}")
            continue
        reached.append(f"{host}:{port}")
        if primary is None and manager.check_master_state(state, url.service):
            primary = f"{state['ip']}:{state['port']}"
            replicas = tuple(f"{ip}:{p}" for ip, p in manager.filter_slaves(node.sentinel_slaves(url.service)))
    return Topology(tuple(reached), tuple(unreachable), primary, replicas)
