"""Starting flow processes: the env's interpreter on the bootstrap, handed to it from worker memory.

Every run gets a fresh process of its environment. A process started here (cold, or ahead of its
run as a spare of the warm pool, ``warm.py``) gets its setup at once (envflow's ``flows.py``, the
deployment's preload modules, which it imports while it waits) and its run when the run comes.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import envflow.flows

BOOTSTRAP = Path(__file__).parent / "flowenv" / "bootstrap.py"
FORKSERVER = Path(__file__).parent / "flowenv" / "forkserver.py"  # the serve mode, handed over with it
SANDBOX = Path(__file__).parent / "flowenv" / "sandbox.py"  # the confinement, handed over with both
FLOWS_PY = Path(envflow.flows.__file__)
FLOWS_SOURCE = FLOWS_PY.read_text(encoding="utf-8")  # read once: what flows run never comes from a flow-writable file
# Runs the bootstrap from SOURCE_FD (the last argument), read at its offset 0 so every process can share the fd.
STUB = ("import os,sys;f=int(sys.argv[-1]);s=os.pread(f,os.fstat(f).st_size,0);os.close(f);"
        "exec(compile(s,'envflow-bootstrap','exec'))")


def _sealed_source() -> int:
    """The bootstrap's source (its sandbox and serve mode first), read once, in a sealed in-memory file: flows can
    neither change the files on disk that later runs execute nor write to this copy."""
    data = b"\n".join(path.read_bytes() for path in (SANDBOX, FORKSERVER, BOOTSTRAP))
    fd = os.memfd_create("envflow-bootstrap", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


BOOTSTRAP_FD = _sealed_source()


NONCE_SIZE = 16  # bytes; the bootstrap's NONCE_SIZE


def bootstrap_argv(python: Path, mode: str, *fds: int) -> list[str]:
    return [str(python), "-u", "-c", STUB, mode, *map(str, fds), str(BOOTSTRAP_FD)]


def setup_message(preload: tuple[str, ...], sandbox: Sandbox | None = None,
                  environ: dict[str, str] | None = None) -> dict[str, Any]:
    """What a flow process sets up before its run: the sandbox it enters first, envflow's stand-in,
    the deployment's own variables (kept out of its exec environment) and the modules to preload."""
    return {"flows_path": str(FLOWS_PY), "flows_source": FLOWS_SOURCE, "preload": list(preload),
            "sandbox": sandbox.config() if sandbox is not None else None, "environ": environ or {}}


@dataclass(frozen=True)
class Sandbox:
    """What every flow process is denied (``sandbox.py``): ``deny`` unreadable and unwritable (the state
    dir), ``read`` read-only (the built-env cache)."""

    deny: tuple[str, ...]
    read: tuple[str, ...]
    on: bool = True  # the worker's probe found Landlock working
    note: str = ""  # the probe's one line: what holds, or what is open

    def config(self) -> dict[str, list[str]] | None:
        return {"deny": list(self.deny), "read": list(self.read)} if self.deny or self.read else None


STARTUP_PREFIXES = ("LD_", "PYTHON", "MALLOC_")  # read by the loader or interpreter at exec: given there


def split_own(variables: dict[str, str], own: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """A flow process's exec environment, and the deployment's own variables (``env=``) taken out of it
    to be handed over its control pipe: a process's exec environment is readable in /proc wherever
    the sandbox is missing. Names read at exec (``LD_*``, ``PYTHON*``, ``MALLOC_*``) stay in both."""
    handed = {k: variables[k] for k in own if k in variables}
    for name, value in handed.items():
        if "\0" in name or "\0" in value:  # as Popen refuses it: no process can be given it
            raise ValueError(f"embedded null byte in the variable {name[:80]!r}")
    startup = {k for k in handed if k.startswith(STARTUP_PREFIXES)}
    return {k: v for k, v in variables.items() if k not in handed or k in startup}, handed


def nonce_pipe() -> tuple[int, bytes]:
    """A pipe holding a new nonce, to pass to one process (its read end) at its start, and the nonce."""
    nonce = os.urandom(NONCE_SIZE)
    r, w = os.pipe()
    try:
        os.write(w, nonce)
    finally:
        os.close(w)
    return r, nonce


def encode(message: dict[str, Any]) -> bytes:
    """A message as the bootstrap reads it: a length line, then a marshal (version 2: any CPython 3 reads it)."""
    data = marshal.dumps(message, 2)
    return b"%d\n" % len(data) + data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class RunProcess(Protocol):
    """What the attempt needs of a flow process: a ``subprocess.Popen``, or a child of a ready parent."""

    @property
    def pid(self) -> int: ...

    @property
    def stdout(self) -> IO[bytes] | None: ...

    @property
    def stderr(self) -> IO[bytes] | None: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...


@dataclass
class FlowProcess:
    """A flow process and the worker's ends of its control and result pipes.

    :param how: ``new`` (started for this run), ``spare`` (started ahead, preloads imported) or
        ``fork`` (forked from a ready parent of its env).
    """

    proc: RunProcess
    control_w: int
    result_r: int
    key: tuple[Any, ...]
    how: str = "new"
    nonce: bytes = b""  # every message to it carries this: it refuses any other (another process's)
    started: float = field(default_factory=time.monotonic)

    def send(self, spec: dict[str, Any]) -> None:
        try:
            write_all(self.control_w, encode({**spec, "nonce": self.nonce}))
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
        for kill in (os.killpg, os.kill):  # its group, and itself should it not lead one
            try:
                kill(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.close()


def spawn(
    python: Path,
    variables: dict[str, str],
    key: tuple[Any, ...] = (),
    preload: tuple[str, ...] = (),
    *,
    cwd: str | None = None,
    capture: bool = True,
    how: str = "new",
    sandbox: Sandbox | None = None,
    environ: dict[str, str] | None = None,
) -> FlowProcess:
    """Start ``python`` on the bootstrap in a new session, set up and waiting for its run.

    :param capture: pipe the flow's stdout and stderr to the worker (else they are inherited).
    :param sandbox: what the process confines itself from before any code of the env or flow runs.
    :param environ: the deployment's own variables, handed over the control pipe (not in ``variables``).
    :raises OSError: the interpreter cannot be executed.
    :raises ValueError: ``variables`` cannot be passed to a process (a NUL byte in a value).
    """
    control_r, control_w = os.pipe()
    result_r, result_w = os.pipe()
    nonce_r, nonce = nonce_pipe()
    try:
        proc = subprocess.Popen(
            bootstrap_argv(python, "run", control_r, result_w, nonce_r),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=variables,
            cwd=cwd,
            pass_fds=(control_r, result_w, nonce_r, BOOTSTRAP_FD),
            start_new_session=True,
        )
    except BaseException:
        os.close(control_w)
        os.close(result_r)
        raise
    finally:
        for fd in (control_r, result_w, nonce_r):
            os.close(fd)
    flow = FlowProcess(proc, control_w, result_r, key, how, nonce)
    flow.send(setup_message(preload, sandbox, environ))  # a few kB: the pipe holds it until the bootstrap reads
    return flow
