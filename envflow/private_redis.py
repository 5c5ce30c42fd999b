"""The private Redis ``envflow up`` starts: its data directory, port, password and where others find them.

Its data (the append-only file holds every deployment's env values) lives in ``<state dir>/redis``,
a 0700 directory whose files are 0600. It always requires a password: the one in
``ENVFLOW_REDIS_URL`` when there is one (then written nowhere), else one ``envflow up`` generates.
``redis-server`` reads its configuration, password included, from a pipe: it is in no config file
and not on a command line.

A generated password is kept, while that Redis runs, in ``<state dir>/redis/password`` (0600, with
the port and ``up``'s pid): that is how ``envflow run ls`` in another terminal of the same user and
state dir reaches it (``completed_url``). It is on disk for that reason alone; a flow runs as the
same user, so that file is kept from flows by the workers' sandbox, which denies them the state
dir, not by its mode. ``up``'s children get the URL without the password and read it there too, so
it is in no process's environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


def data_dir(state_dir: Path) -> Path:
    return state_dir / "redis"


def password_file(state_dir: Path) -> Path:
    return data_dir(state_dir) / "password"


def local_port(url: str) -> int | None:
    """The port of a ``redis://`` URL on this machine, or None for any other URL (or a malformed one)."""
    try:
        parts = urlsplit(url)
        if parts.scheme != "redis" or (parts.hostname or "") not in LOCAL_HOSTS:
            return None
        return parts.port or 6379
    except ValueError:
        return None


def url_password(url: str) -> str | None:
    """The password of a URL, decoded as redis-py decodes it (``p%40ss`` is ``p@ss``)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def completed_url(state_dir: Path, url: str, explicit: bool = True) -> str:
    """``url``, with the saved password of the private Redis at its port when it has none of its own.

    :param explicit: whether the user gave ``url`` (``ENVFLOW_REDIS_URL``); without it, the private
        Redis that ``envflow up`` runs with this state dir is used wherever it listens.
    """
    if url_password(url) is not None or "?" in url and "password=" in url:
        return url
    record = saved_record(state_dir)
    if record is None:
        return url
    if not explicit:
        return with_password(f"redis://127.0.0.1:{record['port']}/0", record["password"])
    return with_password(url, record["password"]) if record["port"] == local_port(url) else url


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded) in place of any credentials it has."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f":{quote(password, safe='')}@{host}", parts.path, parts.query, parts.fragment))


def without_password(url: str) -> str:
    """``url`` with no credentials."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, parts.query, parts.fragment))


def saved_record(state_dir: Path) -> dict | None:
    """The port and password of the private Redis ``envflow up`` runs with this state dir, if it runs."""
    try:
        record = json.loads(password_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("port"), int) or \
            not isinstance(record.get("password"), str):
        return None
    pid = record.get("pid")
    if isinstance(pid, int) and not _alive(pid):  # `up` died without removing it
        return None
    return record


def saved_password(state_dir: Path, url: str) -> str | None:
    """The password ``envflow up`` generated for the private Redis at ``url``'s port, if it runs one."""
    record = saved_record(state_dir)
    return record["password"] if record is not None and record["port"] == local_port(url) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare(state_dir: Path, url: str) -> tuple[Path, str, bool]:
    """Make the data directory private and settle the password.

    :returns: the data directory, the password, and whether it is envflow's own (in the password
        file, to remove when that Redis stops) rather than the user's (in ``ENVFLOW_REDIS_URL``).
    """
    directory = data_dir(state_dir)
    _private_dirs(directory)
    for root, dirs, files in os.walk(directory):  # data from before this was private
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)
    given = url_password(url)
    saved = saved_password(state_dir, url)
    if given is not None and given != saved:
        return directory, given, False
    import secrets

    password = given or secrets.token_urlsafe(24)
    record = {"port": local_port(url), "password": password, "pid": os.getpid()}
    _write_private(password_file(state_dir), json.dumps(record))
    return directory, password, True


def config_text(password: str) -> str:
    """redis.conf text requiring ``password``, for redis-server to read from a pipe (``redis-server -``)."""
    escaped = "".join(
        c if c.isascii() and (c.isalnum() or c in "-_.~") else "".join(f"\\x{b:02x}" for b in c.encode())
        for c in password
    )
    return f'requirepass "{escaped}"\n'


def remove_stale_config(directory: Path) -> None:
    """Remove the config file (with the password) that earlier versions wrote beside the data."""
    (directory / "envflow-redis.conf").unlink(missing_ok=True)


def forget_password(state_dir: Path) -> None:
    password_file(state_dir).unlink(missing_ok=True)


def _private_dirs(directory: Path) -> None:
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(text)
