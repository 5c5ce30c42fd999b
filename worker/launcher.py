"""Starting flow processes, one step ahead.

Every run gets a fresh interpreter of its environment, started on the bootstrap, which
waits for the run on its control pipe before doing anything. An interpreter's start-up
(~10 ms) dwarfs everything else a short run costs, so once two runs in a row used the
same interpreter and environment, the launcher starts the next one right away: it waits,
idle, while the current flow runs and the worker fetches the next run, and is used only
if that run needs exactly the same interpreter, variables and unchanged env on disk.
Otherwise it is killed. Nothing is shared between runs: each still has its own process.
"""

from __future__ import annotations

import fcntl
import logging
import marshal
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("envflow.worker")

BOOTSTRAP = Path(__file__).parent / "flowenv" / "bootstrap.py"
MAX_WARM_AGE = 30.0  # seconds a started interpreter may wait for a run
# Runs the bootstrap from SOURCE_FD (argv[3]), read at its offset 0 so every process can share the fd.
STUB = ("import os,sys;f=int(sys.argv[3]);s=os.pread(f,os.fstat(f).st_size,0);os.close(f);"
        "exec(compile(s,'envflow-bootstrap','exec'))")


def _sealed_source() -> int:
    """The bootstrap's source, read once, in a sealed in-memory file: flows can neither change
    the file on disk that later runs execute nor write to this copy."""
    data = BOOTSTRAP.read_bytes()
    fd = os.memfd_create("envflow-bootstrap", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


BOOTSTRAP_FD = _sealed_source()


def encode_spec(spec: dict[str, Any]) -> bytes:
    """The run as the bootstrap reads it: a length line, then a marshal (version 2: any CPython 3 reads it)."""
    data = marshal.dumps(spec, 2)
    return b"%d\n" % len(data) + data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass
class FlowProcess:
    """A started bootstrap: its process and the worker's ends of its control and result pipes."""

    proc: subprocess.Popen
    control_w: int
    result_r: int
    key: tuple[Any, ...]
    started: float

    def send(self, spec: dict[str, Any]) -> None:
        try:
            write_all(self.control_w, encode_spec(spec))
        except BrokenPipeError:
            pass  # the interpreter died at once; its exit status tells why

    def close(self) -> None:
        """Close the worker's pipe ends; the bootstrap's watchdog sees EOF and ends the group."""
        for fd in (self.control_w, self.result_r):
            try:
                os.close(fd)
            except OSError:
                pass

    def discard(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.close()


def spawn(
    python: Path, variables: dict[str, str], key: tuple[Any, ...], cwd: str | None = None, capture: bool = True
) -> FlowProcess:
    """Start ``python`` on the bootstrap in a new session, waiting for its run.

    :param capture: pipe the flow's stdout and stderr to the worker (else they are inherited).
    :raises OSError: the interpreter cannot be executed.
    :raises ValueError: ``variables`` cannot be passed to a process (a NUL byte in a value).
    """
    control_r, control_w = os.pipe()
    result_r, result_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [str(python), "-u", "-c", STUB, str(control_r), str(result_w), str(BOOTSTRAP_FD)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=variables,
            cwd=cwd,
            pass_fds=(control_r, result_w, BOOTSTRAP_FD),
            start_new_session=True,
        )
    except BaseException:
        os.close(control_w)
        os.close(result_r)
        raise
    finally:
        os.close(control_r)
        os.close(result_w)
    return FlowProcess(proc, control_w, result_r, key, time.monotonic())


class Launcher:
    """Hands out flow processes, keeping the next one started when runs repeat."""

    def __init__(self) -> None:
        self.warm: FlowProcess | None = None
        self.last_key: tuple[Any, ...] | None = None
        self.hits = 0
        self.misses = 0

    def launch(self, python: Path, variables: dict[str, str], key: tuple[Any, ...]) -> FlowProcess:
        """A process for this run: the warm one when it matches, else a new one."""
        warm, self.warm = self.warm, None
        if warm is not None:
            fresh = time.monotonic() - warm.started < MAX_WARM_AGE and warm.proc.poll() is None
            if warm.key == key and fresh:
                self.hits += 1
                return warm
            self.misses += 1
            warm.discard()
        return spawn(python, variables, key)

    def prepare_next(self, python: Path, variables: dict[str, str], key: tuple[Any, ...]) -> None:
        """Start the next run's interpreter now if the last two runs had this key."""
        repeated, self.last_key = self.last_key == key, key
        if repeated and self.warm is None:
            try:
                self.warm = spawn(python, variables, key)
            except OSError as e:
                log.debug("could not start an interpreter ahead of time: %s", e)

    def close(self) -> None:
        if self.warm is not None:
            self.warm.discard()
            self.warm = None
