"""Unique worker names, and proof of which earlier worker in this state dir is gone.

A worker is named ``<hostname>.<slot>.<random>``. The hostname and slot say where it runs
(hosts with host networking, pods with fixed hostnames and containers share hostnames, so
the name alone never claims uniqueness); the random part makes every live worker process's
name unique. The slot is the first lock file in ``<state dir>/worker-locks`` the worker can
lock; the lock dies with its process, and the file keeps the holder's name. So a worker
restarted with the same state dir finds its predecessor's name in the slot it takes, and
reaps the runs it left behind at once, however long ago their leases lapsed.

The name in a slot file is only a claim: a flow of the same user can write any name there. So the
predecessor must also be proven dead from what it recorded itself in Redis, which flows cannot
write: its pid, boot id, pid namespace and start time (:func:`process_stamp`), checked against
this machine's processes (:func:`stamp_alive`).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAX_SLOTS = 1024
LOCKS = "worker-locks"


@dataclass
class WorkerIdentity:
    name: str
    predecessor: str | None  # the name the slot's previous holder ran under (a claim: see the module's doc)
    lock: IO[bytes]  # held open for the process's life


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")  # kept open while the worker lives
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    os.set_inheritable(handle.fileno(), False)
    return handle


def _take(handle: IO[bytes], name: str) -> str | None:
    """Record ``name`` as the slot's holder; return the previous holder's name."""
    handle.seek(0)
    previous = handle.read().decode("utf-8", "replace").strip() or None
    handle.seek(0)
    handle.truncate()
    handle.write(name.encode())
    handle.flush()
    return previous


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (the state dir holds cached flow sources)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o700)
    return path


def _lock_dir(state_dir: Path) -> Path:
    private_dir(state_dir)
    return private_dir(state_dir / LOCKS)


def acquire(state_dir: Path, name: str | None = None) -> WorkerIdentity:
    """Take ``name``, or a new unique ``<hostname>.<slot>.<random>`` in the first free slot.

    :raises RuntimeError: an explicit name is held by a live worker with this state dir.
    """
    locks = _lock_dir(state_dir)
    if name is not None:
        handle = _try_lock(locks / f"{_safe(name)}.lock")
        if handle is None:
            raise RuntimeError(f"another worker with this state dir already runs under the name {name!r}")
        return WorkerIdentity(name, _take(handle, name), handle)
    host = _safe(socket.gethostname()) or "worker"
    for slot in range(1, MAX_SLOTS + 1):
        handle = _try_lock(locks / f"slot-{slot}.lock")
        if handle is not None:
            mine = f"{host}.{slot}.{secrets.token_hex(3)}"
            return WorkerIdentity(mine, _take(handle, mine), handle)
    raise RuntimeError(f"more than {MAX_SLOTS} workers with this state dir")


def live_names(state_dir: Path) -> Iterator[str]:
    """Names of the workers alive now with this state dir (those holding their slot's lock)."""
    locks = state_dir / LOCKS
    if not locks.is_dir():
        return
    for path in sorted(locks.glob("*.lock")):
        handle = _try_lock(path)
        if handle is not None:  # free: its holder is gone
            handle.close()
            continue
        name = path.read_text(encoding="utf-8", errors="replace").strip()
        if name:
            yield name


STAMP_FIELDS = ("envflow_pid", "envflow_boot", "envflow_pidns", "envflow_start")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name start at field 3


def process_stamp() -> dict[str, str]:
    """What identifies this process on this machine, for a successor to check it is gone."""
    pid = os.getpid()
    return {"envflow_pid": str(pid), "envflow_boot": _boot_id(), "envflow_pidns": _pid_namespace(),
            "envflow_start": _start_time(pid) or ""}


def stamp_alive(stamp: dict[str, str]) -> bool | None:
    """Whether the process ``stamp`` describes is alive; None when this process cannot tell (no
    stamp, or one from another boot or pid namespace, as after a container's restart)."""
    if not all(stamp.get(f) for f in STAMP_FIELDS) or not _boot_id() or \
            (stamp["envflow_boot"], stamp["envflow_pidns"]) != (_boot_id(), _pid_namespace()):
        return None
    return _start_time(int(stamp["envflow_pid"])) == stamp["envflow_start"]
