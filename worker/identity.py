"""Stable worker names, with proof that a previous holder of the name is gone.

A worker is named ``<hostname>.<slot>``: the first slot whose lock file it can lock. The
lock dies with its process, so a worker restarted in the same container (same hostname,
same filesystem) gets its predecessor's name back and knows that predecessor is dead:
it can reap the runs the predecessor left behind at once, instead of waiting for their
leases to expire.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path
from typing import IO

MAX_SLOTS = 1024


class WorkerIdentity:
    def __init__(self, name: str, lock: IO[bytes]) -> None:
        self.name = name
        self._lock = lock  # held open for the process's life

    def release(self) -> None:
        self._lock.close()


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = open(path, "ab")  # noqa: SIM115 - kept open while the worker lives
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    os.set_inheritable(handle.fileno(), False)
    return handle


def acquire(state_dir: Path, name: str | None = None) -> WorkerIdentity:
    """Take ``name``, or the first free ``<hostname>.<slot>``.

    :raises RuntimeError: an explicit name is held by a live worker on this host.
    """
    locks = state_dir / "worker-locks"
    locks.mkdir(parents=True, exist_ok=True)
    if name is not None:
        handle = _try_lock(locks / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock")
        if handle is None:
            raise RuntimeError(f"another worker on this host already runs under the name {name!r}")
        return WorkerIdentity(name, handle)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "worker"
    for slot in range(1, MAX_SLOTS + 1):
        candidate = f"{host}.{slot}"
        handle = _try_lock(locks / f"{candidate}.lock")
        if handle is not None:
            return WorkerIdentity(candidate, handle)
    raise RuntimeError(f"more than {MAX_SLOTS} workers on this host")
