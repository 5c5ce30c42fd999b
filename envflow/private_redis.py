"""The private Redis ``envflow up`` starts: its data directory, config and password.

Its data (the append-only file holds every deployment's env values) lives in
``<state dir>/redis``, a 0700 directory whose files are 0600. It always requires a password:
the one in ``ENVFLOW_REDIS_URL`` when there is one, else one ``envflow up`` generates and keeps,
while that Redis runs, in ``<state dir>/redis/password`` (0600). Every envflow command with the
same ``ENVFLOW_STATE_DIR`` and a passwordless ``redis://`` URL for the same local port reads it
from there (see ``Settings``), so other users of the machine cannot reach that Redis.
The password goes to ``redis-server`` in a 0600 config file, never on its command line.
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


def completed_url(state_dir: Path, url: str) -> str:
    """``url``, with the saved password of the private Redis at its port when it has none of its own."""
    if url_password(url) is not None or "?" in url and "password=" in url:
        return url
    saved = saved_password(state_dir, url)
    return url if saved is None else with_password(url, saved)


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded) in place of any credentials it has."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f":{quote(password, safe='')}@{host}", parts.path, parts.query, parts.fragment))


def saved_password(state_dir: Path, url: str) -> str | None:
    """The password ``envflow up`` generated for the private Redis at ``url``'s port, if it runs one."""
    port = local_port(url)
    if port is None:
        return None
    try:
        saved = json.loads(password_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("port") != port or not isinstance(saved.get("password"), str):
        return None
    return saved["password"]


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
    _write_private(password_file(state_dir), json.dumps({"port": local_port(url), "password": password}))
    return directory, password, True


def config_file(directory: Path, password: str) -> Path:
    """A 0600 redis.conf holding the password, so that it is not on redis-server's command line."""
    escaped = "".join(
        c if c.isascii() and (c.isalnum() or c in "-_.~") else "".join(f"\\x{b:02x}" for b in c.encode())
        for c in password
    )
    path = directory / "envflow-redis.conf"
    _write_private(path, f'requirepass "{escaped}"\n')
    return path


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
