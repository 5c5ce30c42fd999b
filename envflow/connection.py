"""Redis connections built from one URL, with Redis errors turned into QueueError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis import Redis

from .errors import QueueError
from .redaction import redact_url


def connect(url: str, **kwargs: object) -> Redis:
    """A Redis client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

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
    try:
        return Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
    except ValueError as e:
        raise QueueError(f"invalid Redis URL {redact_url(url)!r}: {e}") from e


def describe(client: Redis) -> str:
    """Where a client connects, without credentials, for messages."""
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
