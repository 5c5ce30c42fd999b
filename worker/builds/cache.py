"""The cache of built envs on one host: where each lives, who builds it, who uses it, what is evicted.

Layout of the cache directory (``ENVFLOW_ENV_CACHE``; in compose a named volume the worker
replicas of one host share)::

    <key>/                        a built env (a relocatable venv), read-only once built
    <key>/envflow-env.json        what it was built from, its size; its mtime is the env's last use
    .locks/<key>.build            flock: held exclusively by the one process building <key>
    .locks/<key>.use              flock: shared while a run uses <key>; eviction needs it exclusively
    .build-<key>-<random>/        a build in progress (renamed to <key> when it succeeds)
    .trash-<key>-<random>/        an evicted env being deleted
    .builds.log                   one JSON line per build started, finished, failed, cancelled, evicted
    .uv-cache/                    uv's download cache (unless UV_CACHE_DIR is set)

Locks are ``flock`` locks on files in the cache directory, so they hold across processes and across
containers that mount the same volume. A process keeps one descriptor per lock file (flock locks of
two descriptors of one file conflict, even in one process), and holds shared ``use`` locks on the
envs it used most recently: its latest run's, and those its warm processes may come from.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

META = "envflow-env.json"
JOURNAL = ".builds.log"
JOURNAL_MAX_BYTES = 1024 * 1024  # the journal is rotated to .builds.log.1 beyond this
LOCK_POLL = 0.1  # seconds between tries for a build lock another process holds

_registry_lock = threading.Lock()
_fds: dict[str, int] = {}  # lock file -> this process's descriptor
_building: dict[int, threading.Lock] = {}  # a build lock's descriptor -> the lock of this process's threads
_pinned: dict[str, OrderedDict[str, None]] = {}  # cache dir -> keys this process holds use locks on, oldest first


class BuildCancelled(Exception):
    """The run stopped while its env was being built or waited for."""


@dataclass
class BuiltEnv:
    """A built env in the cache, as ``env ls`` shows it."""

    key: str
    path: Path
    size: int
    last_used: float
    meta: dict[str, Any]
    in_use: bool = False


def _fd(path: Path) -> int:
    """This process's descriptor of a lock file (opened once, kept)."""
    name = str(path)
    with _registry_lock:
        if name not in _fds:
            _fds[name] = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return _fds[name]


def _try(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def disk_usage(path: Path) -> int:
    """Bytes ``path`` takes on disk (allocated blocks), each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _writable(path: Path) -> None:
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass


def remove_tree(path: Path) -> None:
    """Delete a directory tree, read-only parts included."""
    try:
        os.chmod(path, 0o700)
    except OSError:
        return
    _writable(path)
    shutil.rmtree(path, ignore_errors=True)


def make_read_only(path: Path) -> None:
    """Take write permission off every file and directory of a built env (an accidental ``pip install``
    by a flow fails instead of changing what later runs import)."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in [*files, *dirs]:
            full = os.path.join(root, name)
            st = os.lstat(full)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(full, stat.S_IMODE(st.st_mode) & ~0o222)
    os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & ~0o222)


class EnvStore:
    """The built envs under one cache directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        for path in (self.root, self.root / ".locks"):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.root / key / META).is_file()

    def _lock(self, key: str, kind: str) -> Path:
        return self.root / ".locks" / f"{key}.{kind}"

    # Building

    def lock_build(self, key: str, cancelled: threading.Event, waiting: Callable[[], None]) -> int:
        """Take ``key``'s build lock, waiting while another process builds it.

        :param waiting: called once if the lock is busy (to say so in the run's output).
        :raises BuildCancelled: ``cancelled`` was set while waiting.
        """
        self.ensure()
        fd = _fd(self._lock(key, "build"))
        with _registry_lock:
            threads = _building.setdefault(fd, threading.Lock())  # flock does not part threads of one process
        owned = threads.acquire(blocking=False)
        if owned and _try(fd, fcntl.LOCK_EX):
            return fd
        waiting()
        while not cancelled.wait(LOCK_POLL):
            owned = owned or threads.acquire(blocking=False)
            if owned and _try(fd, fcntl.LOCK_EX):
                return fd
        if owned:
            threads.release()
        raise BuildCancelled("stopped while waiting for another build of this env")

    def unlock_build(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        _building[fd].release()

    def temp_dir(self, key: str) -> Path:
        """A fresh build directory beside the final one (the caller holds the build lock, so builds of
        ``key`` a killed process left behind are removed first)."""
        for stale in self.root.glob(f".build-{key}-*"):
            remove_tree(stale)
        return self.root / f".build-{key}-{secrets.token_hex(4)}"

    def install(self, temp: Path, key: str, meta: dict[str, Any]) -> None:
        """Write the metadata, make the env read-only and move it into place in one rename."""
        meta = {**meta, "size": disk_usage(temp)}
        (temp / META).write_text(json.dumps(meta, indent=1) + "\n")
        make_read_only(temp)
        os.rename(temp, self.path(key))

    # Using

    def pin(self, key: str, keep: int = 1) -> bool:
        """Hold ``key``'s shared use lock, so eviction skips it, along with the ``keep - 1`` other envs this
        process used most recently (its warm processes come from them); older ones are let go. False when
        the env is gone (evicted meanwhile)."""
        with _registry_lock:
            held = _pinned.setdefault(str(self.root), OrderedDict())
            known = key in held
            if known:
                held.move_to_end(key)
        if known:
            return self.exists(key)
        self.ensure()
        fd = _fd(self._lock(key, "use"))
        fcntl.flock(fd, fcntl.LOCK_SH)  # an eviction holds it exclusively for a rename only
        if not self.exists(key):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        with _registry_lock:
            held[key] = None
            dropped = [held.popitem(last=False)[0] for _ in range(max(len(held) - max(keep, 1), 0))]
        for old in dropped:
            fcntl.flock(_fd(self._lock(old, "use")), fcntl.LOCK_UN)
        return True

    def _pinned_here(self, key: str) -> bool:
        with _registry_lock:
            return key in _pinned.get(str(self.root), ())

    def touch(self, key: str) -> None:
        """Record a use of ``key`` now (its metadata file's mtime)."""
        try:
            os.utime(self.path(key) / META)
        except OSError:
            pass

    # Listing and evicting

    def envs(self) -> list[BuiltEnv]:
        """Every built env, least recently used first."""
        found: list[BuiltEnv] = []
        if not self.root.is_dir():
            return found
        for child in self.root.iterdir():
            meta_file = child / META
            if child.name.startswith(".") or not meta_file.is_file():
                continue
            try:
                meta = json.loads(meta_file.read_text())
                last_used = meta_file.stat().st_mtime
            except (OSError, ValueError):
                continue
            found.append(BuiltEnv(child.name, child, int(meta.get("size", 0)), last_used, meta,
                                  in_use=self._in_use(child.name)))
        return sorted(found, key=lambda e: e.last_used)

    def _in_use(self, key: str) -> bool:
        if self._pinned_here(key):
            return True
        path = self._lock(key, "use")
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            return not _try(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)  # closing drops the lock it may have taken

    def remove(self, key: str) -> bool:
        """Evict ``key`` unless a run uses it (or this process pinned it); True when it was removed."""
        if self._pinned_here(key):
            return False
        self.ensure()
        fd = os.open(self._lock(key, "use"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _try(fd, fcntl.LOCK_EX) or not self.exists(key):
                return False
            trash = self.root / f".trash-{key}-{secrets.token_hex(4)}"
            os.rename(self.path(key), trash)
        finally:
            os.close(fd)
        remove_tree(trash)
        self.journal(key, "evicted")
        return True

    def evict(self, max_bytes: int) -> list[BuiltEnv]:
        """Evict least recently used envs until the cache holds at most ``max_bytes``; envs in use are
        skipped. Returns those evicted."""
        envs = self.envs()
        total = sum(e.size for e in envs)
        evicted = []
        for env in envs:
            if total <= max_bytes:
                break
            if not env.in_use and self.remove(env.key):
                total -= env.size
                evicted.append(env)
        self._remove_leftovers()
        return evicted

    def _remove_leftovers(self) -> None:
        """Delete what killed processes left: envs half deleted, and builds nobody is running."""
        if not self.root.is_dir():
            return
        for leftover in self.root.glob(".trash-*"):
            remove_tree(leftover)
        for build in self.root.glob(".build-*"):
            lock = self._lock(build.name.split("-")[1], "build")
            if not lock.exists():
                continue
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)  # not this process's descriptor: its builds hold theirs
            try:
                if _try(fd, fcntl.LOCK_EX):
                    remove_tree(build)
            finally:
                os.close(fd)

    # The journal

    def journal(self, key: str, event: str, **fields: Any) -> None:
        """Append one line to ``.builds.log``: what happened to which env, where and when."""
        self.ensure()
        path = self.root / JOURNAL
        entry = {"time": round(time.time(), 3), "env": key, "event": event, "host": socket.gethostname(),
                 "pid": os.getpid(), **fields}
        try:
            if path.stat().st_size > JOURNAL_MAX_BYTES:
                os.replace(path, path.with_name(JOURNAL + ".1"))
        except OSError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)

    def history(self) -> list[dict[str, Any]]:
        """The journal's entries, oldest first."""
        try:
            lines = (self.root / JOURNAL).read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]
