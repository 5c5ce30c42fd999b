"""Redis connections built from one URL, with Redis errors turned into QueueError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis import Redis

from .errors import QueueError
from .redaction import redact_url
from .sentinel import SentinelURL, is_sentinel_url
from .sentinel import describe as describe_sentinel

# Redis's OOM reply (maxmemory with noeviction): newer than typeshed's redis stubs.
OutOfMemoryError: type[redis.exceptions.ResponseError] = redis.exceptions.OutOfMemoryError  # type: ignore[attr-defined]
# What a worker waits out rather than dies of: Redis away or slow, or out of memory (maxmemory
# with noeviction refuses writes until memory is freed: an outage of writes). Buffer, back off, retry.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OutOfMemoryError,
)


def connect(url: str, **kwargs: object) -> Redis:
    """A Redis client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``, or
    ``redis+sentinel://`` for the primary that Sentinel names, followed through failovers: ``sentinel.py``).

    :param url: the server's URL; a password in it is never shown in messages.
    """
    # The version redis-py announces (CLIENT SETINFO) is its own __version__: given here, redis-py does
    # not look itself up in the installed distributions' metadata, a few ms per process.
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 7
        kwargs.setdefault("lib_version", redis.__version__)
    else:
        kwargs.setdefault("driver_info", DriverInfo(lib_version=redis.__version__))
    if is_sentinel_url(url):
        return SentinelURL.parse(url).primary(**kwargs)
    try:
        return Redis.from_url(url, **kwargs)  # type: ignore[call-overload]  # driver_info is newer than the stubs
    except ValueError as e:
        raise QueueError(f"invalid Redis URL {redact_url(url)!r}: {e}") from e


def single_attempt(client: Redis) -> Redis:
    """A client for the same server (or Sentinel service) whose calls are tried once, not retried:
    a health check must say "unreachable" during a failover, not wait it out."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    if hasattr(pool, "sentinel_manager"):
        kwargs.pop("connection_pool", None)  # the Sentinel pool's own link to itself
        return pool.sentinel_manager.master_for(  # type: ignore[attr-defined]
            pool.service_name, connection_class=pool.connection_class, **kwargs)  # type: ignore[attr-defined]
    return Redis(connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs))


def describe(client: Redis) -> str:
    """Where a client connects, without credentials, for messages."""
    if hasattr(client.connection_pool, "sentinel_manager"):
        return describe_sentinel(client)
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


@contextlib.contextmanager
def wrap_errors(client: Redis) -> Iterator[None]:
    """Turn Redis connection and response errors into one-line QueueErrors."""
    try:
        yield
    except redis.exceptions.AuthenticationError as e:
        raise QueueError(
            f"Redis at {describe(client)} refused the credentials ({str(e).rstrip('.')}): check ENVFLOW_REDIS_URL; if "
            "`envflow up` started it, run with the ENVFLOW_STATE_DIR it runs with (it keeps the password in "
            "<state dir>/redis/password) or put that password in ENVFLOW_REDIS_URL"
        ) from e
    except redis.exceptions.ConnectionError as e:
        raise QueueError(
            f"cannot reach Redis at {describe(client)} ({e}); start it (`envflow up` starts one) "
            "or set ENVFLOW_REDIS_URL"
        ) from e
    except redis.exceptions.ResponseError as e:
        raise QueueError(f"Redis at {describe(client)} answered with an error: {e}") from e
