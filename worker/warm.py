"""Warm env pools: for the envs a worker uses, a process ready to become the next run.

Each key (interpreter, the env's file stamps, the flow's variables, the preload list: everything
that shapes the process) gets a ready parent: the env's interpreter in the bootstrap's ``serve``
mode, envflow's stand-in loaded and the deployment's preload modules imported. A run then starts
in a process forked from it, in a millisecond, with its own pid, session and pipes; nothing one
run does reaches the parent or the next run. When a preloaded module started threads, forking is
unsafe: that key falls back, logged once, to a spare process started ahead of the next run (also
set up and preloaded, used once). Keys unused for ``ENVFLOW_WARM_IDLE`` seconds go, and at most
``ENVFLOW_WARM_MAX`` ready processes are kept, least recently used evicted first.
"""

from __future__ import annotations

import array
import logging
import marshal
import os
import signal
import socket
import subprocess
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .env_cache import Prepared
from .launcher import BOOTSTRAP_FD, NONCE_SIZE, FlowProcess, Sandbox, bootstrap_argv, setup_message, spawn

log = logging.getLogger("envflow.worker")

REPLY_WAIT = 10.0  # seconds a ready parent may take to answer a fork request
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0



def warm_key(prepared: Prepared, preload: tuple[str, ...]) -> tuple[Any, ...]:
    """Everything that shapes a flow process before its run: interpreter, env stamps, variables, preloads."""
    return (str(prepared.python), prepared.stamp, tuple(sorted(prepared.variables.items())), preload)

class ForkedChild:
    """A run process forked by a ready parent (``RunProcess``): its exit status comes from that parent."""

    def __init__(self, pid: int, server: ForkServer, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid, self.server, self.stdout, self.stderr = pid, server, stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_status(self.pid, block=False)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:  # a blocking wait returns the status (None only without blocking)
            self.returncode = self.server.exit_status(self.pid, block=True)
        return self.returncode


class ForkServer:
    """A ready parent for one key, started at once and ready when its setup is done."""

    def __init__(self, python: Path, variables: dict[str, str], preload: tuple[str, ...],
                 sandbox: Sandbox | None = None, environ: dict[str, str] | None = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                bootstrap_argv(python, "serve", theirs.fileno()), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=variables, pass_fds=(theirs.fileno(), BOOTSTRAP_FD),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.sock.sendall(marshal.dumps(setup_message(preload, sandbox, environ), 2))
        self.ready = False
        self.alive = True
        self.threads = 0
        self.next: FlowProcess | None = None  # a child forked ahead, waiting for its run
        self._exits: dict[int, int] = {}

    def poll_ready(self) -> bool:
        while self.alive and not self.ready and self._read(0.0) is not None:
            pass
        return self.ready

    def _read(self, timeout: float | None) -> dict[str, Any] | None:
        """One message (None: nothing within ``timeout``); exits and readiness are recorded as they come."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError:
            data = b""
        if not data:
            self.alive = False
            return None
        message: dict[str, Any] = marshal.loads(data)
        if "exit" in message:
            self._exits[message["exit"]] = message["status"]
        elif "ready" in message:
            self.ready, self.threads = True, message["threads"]
        return message

    def fork(self, key: tuple[Any, ...]) -> FlowProcess:
        """A new run process, forked from the ready parent.

        :raises OSError: the parent is gone or did not answer.
        """
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        control_r, control_w = os.pipe()
        result_r, result_w = os.pipe()
        theirs = [out_w, err_w, control_r, result_w]
        nonce = os.urandom(NONCE_SIZE)  # the child's alone: it refuses control messages without it
        try:
            self.sock.settimeout(REPLY_WAIT)
            self.sock.sendmsg([b"F" + nonce], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", theirs))])
            pid = self._reply_pid()
        except BaseException:
            for fd in (out_r, err_r, control_w, result_r):
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        child = ForkedChild(pid, self, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0))
        return FlowProcess(child, control_w, result_r, key, "fork", nonce)

    def _reply_pid(self) -> int:
        deadline = time.monotonic() + REPLY_WAIT
        while self.alive and time.monotonic() < deadline:
            message = self._read(max(deadline - time.monotonic(), 0.001))
            if message is not None and "pid" in message:
                return int(message["pid"])
        self.alive = False
        raise OSError("the env's ready process did not answer a fork request")

    def exit_status(self, pid: int, block: bool) -> int | None:
        """A child's exit status, as its parent reported it; -1 when the parent died without telling."""
        while pid not in self._exits:
            if not self.alive:
                return -1 if block or not _exists(pid) else None
            if self._read(REPLY_WAIT if block else 0.0) is None:
                if not block:
                    return None
                if not _exists(pid):
                    return -1  # gone, and its parent never said how
        return self._exits.pop(pid)

    def close(self) -> None:
        if self.next is not None:
            self.next.discard()
            self.next = None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.sock.close()
        self.alive = False


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@dataclass
class Ready:
    """One key's warm process: a ready parent, or, where forking is unsafe, a spare started ahead."""

    key: tuple[Any, ...]
    python: Path
    variables: dict[str, str]
    preload: tuple[str, ...]
    label: str
    sandbox: Sandbox | None = None
    environ: dict[str, str] = field(default_factory=dict)  # the deployment's own variables
    pinned: bool = False  # a warm=True deployment's: kept however long it idles
    server: ForkServer | None = None
    spare: FlowProcess | None = None
    last_used: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.server = ForkServer(self.python, self.variables, self.preload, self.sandbox, self.environ)

    def take(self) -> FlowProcess | None:
        """A process for a run now, or None (still starting: the run starts a new one)."""
        if self.server is not None:
            if not self.server.poll_ready():
                if not self.server.alive:
                    self._fall_back("its ready process died")
                return None
            if self.server.threads > 1:
                self._fall_back(f"its preloaded modules started {self.server.threads - 1} thread(s), so forking "
                                "is unsafe")
                return None
            flow, self.server.next = self.server.next, None
            if flow is not None and flow.proc.poll() is None:
                return flow
            try:
                return self.server.fork(self.key)
            except OSError as e:
                self._fall_back(str(e))
                return None
        spare, self.spare = self.spare, None
        if spare is not None and spare.proc.poll() is None:
            return spare
        if spare is not None:
            spare.discard()
        return None

    def replenish(self) -> None:
        """Have the next run's process ready: a child forked ahead, or a spare started ahead."""
        if self.server is not None:
            if self.server.next is None and self.server.poll_ready() and self.server.threads <= 1:
                self.server.next = self.server.fork(self.key)
        elif self.spare is None:
            self.spare = spawn(self.python, self.variables, self.key, self.preload, how="spare", sandbox=self.sandbox,
                               environ=self.environ)

    def _fall_back(self, reason: str) -> None:
        log.warning("warm env %s: %s; its runs start in processes started ahead instead", self.label, reason)
        if self.server is not None:
            self.server.close()
            self.server = None

    def pid(self) -> int | None:
        if self.server is not None:
            return self.server.proc.pid
        return self.spare.proc.pid if self.spare is not None else None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.spare is not None:
            self.spare.discard()
        self.server = self.spare = None


class WarmPool:
    """The ready processes of one worker, by key; used from the run's thread and the maintenance thread.

    :param max_ready: at most this many keys kept ready (``ENVFLOW_WARM_MAX``).
    :param idle: seconds an unpinned key stays ready after its last run (``ENVFLOW_WARM_IDLE``).
    :param sandbox: what every flow process started here confines itself from.
    """

    def __init__(self, max_ready: int, idle: float, sandbox: Sandbox | None = None) -> None:
        self.max_ready = max_ready
        self.idle = idle
        self.sandbox = sandbox
        self.entries: OrderedDict[tuple[Any, ...], Ready] = OrderedDict()
        self.lock = threading.Lock()
        self.closed = False

    def launch(self, python: Path, variables: dict[str, str], key: tuple[Any, ...], preload: tuple[str, ...],
               label: str, environ: dict[str, str] | None = None) -> FlowProcess:
        """A process for a run: forked from the key's ready parent, its spare, or else started now (and
        the key made ready for the next run)."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                entry.last_used = time.monotonic()
                flow = entry.take()
                if flow is not None:
                    return flow
            elif not self.closed and self.max_ready > 0:
                self._add(Ready(key, python, variables, preload, label, self.sandbox, environ or {}))
        return spawn(python, variables, key, preload, sandbox=self.sandbox, environ=environ)

    def keep_warm(self, python: Path, variables: dict[str, str], key: tuple[Any, ...], preload: tuple[str, ...],
                  label: str, environ: dict[str, str] | None = None) -> None:
        """Make a key ready and keep it so however long it idles (a ``warm=True`` deployment's env)."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is None and not self.closed and self.max_ready > 0:
                entry = self._add(Ready(key, python, variables, preload, label, self.sandbox, environ or {}))
            if entry is not None:
                entry.pinned = True

    def replenish(self, key: tuple[Any, ...]) -> None:
        """After a run took a key's spare: start the next one (off the run's critical path)."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None and not self.closed:
                try:
                    entry.replenish()
                except (OSError, ValueError) as e:
                    log.warning("warm env %s: cannot start a process ahead: %s", entry.label, e)

    def _add(self, entry: Ready) -> Ready:
        # The same env, variables and preloads under another key: its files changed, that process is stale.
        stale = [k for k, e in self.entries.items()
                 if (e.python, e.variables, e.preload, e.environ) == (entry.python, entry.variables, entry.preload,
                                                                     entry.environ)]
        for key in stale:
            self.entries.pop(key).close()
        try:
            entry.start()
        except (OSError, ValueError) as e:
            log.warning("warm env %s: cannot start its ready process: %s", entry.label, e)
            return entry
        self.entries[entry.key] = entry
        while len(self.entries) > self.max_ready:
            unpinned = [k for k, e in self.entries.items() if not e.pinned and k != entry.key]
            self.entries.pop(unpinned[0] if unpinned else next(iter(self.entries))).close()
        return entry

    def tick(self) -> None:
        """Let go of keys idle for longer than ``idle`` (pinned ones stay)."""
        cutoff = time.monotonic() - self.idle
        with self.lock:
            for key in [k for k, e in self.entries.items() if not e.pinned and e.last_used < cutoff]:
                self.entries.pop(key).close()

    def status(self) -> list[dict[str, Any]]:
        """Each ready key: its env, preloads, how runs start there, its process and memory."""
        with self.lock:
            out = []
            for e in self.entries.values():
                mode = "spare" if e.server is None else ("fork" if e.server.poll_ready() else "starting")
                pid = e.pid()
                out.append({"env": e.label, "preload": list(e.preload), "mode": mode, "pid": pid,
                            "rss": rss(pid) if pid else 0, "pinned": e.pinned,
                            "idle": round(time.monotonic() - e.last_used, 1)})
            return out

    def close(self) -> None:
        with self.lock:
            self.closed = True
            while self.entries:
                self.entries.popitem()[1].close()
