"""Child processes the benchmark owns: started in their own session, always reaped.

Every long-lived child (redis-server, workers) is registered here and stopped by
:func:`stop_all`, which ``bench/__main__.py`` calls on every exit path (normal end,
exception, Ctrl-C, SIGTERM). On Linux each child also gets ``PR_SET_PDEATHSIG``, so
even a SIGKILLed benchmark leaves nothing running.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _libc = None


def _die_with_parent() -> None:
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """A long-lived child process with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self.log = log
        handle = open(log, "wb")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops children in order
                preexec_fn=_die_with_parent,
            )
        finally:
            handle.close()
        _children.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, text: str, timeout: float) -> None:
        """Block until ``text`` appears in the child's log.

        :raises RuntimeError: the child exited or ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive() or time.monotonic() > deadline:
                tail = "\n".join(self.output().splitlines()[-20:])
                raise RuntimeError(f"{self.name} did not get ready ({text!r} not seen):\n{tail}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self in _children:
            _children.remove(self)


_children: list[Child] = []


def stop_all() -> None:
    """Stop every registered child, newest first (workers before the Redis they use)."""
    for child in reversed(list(_children)):
        try:
            child.stop()
        except Exception:  # noqa: BLE001 - cleanup goes on whatever one child does
            try:
                os.kill(child.pid, signal.SIGKILL)
            except OSError:
                pass


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (``VmRSS`` in ``/proc/<pid>/status``), or None when gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a daemon thread: ``(t, bytes)`` pairs."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import threading

        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        start = time.monotonic()
        while True:
            value = rss_bytes(self.pid)
            if value is not None:
                self.samples.append((round(time.monotonic() - start, 3), value))
            if self._stop.wait(self.interval):
                return


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc: their parent pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of a process itself, and of its reaped descendants, in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return (0.0, 0.0)
    # After the command name: state is field 3, so utime/stime/cutime/cstime (14-17) are at 11-14.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ((utime + stime) / _TICK, (cutime + cstime) / _TICK)
