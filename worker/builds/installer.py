"""Building one env with uv: ``uv venv`` from the base interpreter, then ``uv pip install``, their output
streamed live (credentials in URLs redacted, line by line) and their process group killed on a stop.

Package indexes come from the worker's settings only (``ENVFLOW_PIP_*``), handed to uv through its
environment variables (not its arguments, which any user of the host can read). uv reads no
configuration file (``UV_NO_CONFIG``: a ``uv.toml`` under the worker's ``HOME`` or in a project is
flows' to write) and runs from ``/``. uv and the build backends of sdists it starts get the flows'
allowlist of the worker's variables (``variables.flow_base``), proxies and what envflow sets, never
the worker's whole environment.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from envflow.settings import Settings

from .cache import BuildCancelled

READ_SIZE = 65536
ERROR_TAIL = 4000  # characters of the installer's stderr kept for the run's error
# Of the flows' variables, those that would point uv at another interpreter or environment.
DROPPED = frozenset({"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX"})
# The worker's network settings a build needs to reach an index, beyond the flows' allowlist.
PROXIES = frozenset({f"{n}{p}" for p in ("_PROXY", "_proxy") for n in ("HTTP", "HTTPS", "ALL", "NO")} |
                    {"http_proxy", "https_proxy", "all_proxy", "no_proxy"})
BUILD_CWD = Path("/")  # uv's working directory: one flows cannot write (it reads no project there anyway)

_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_worker() -> None:
    """In the installer's process, before it runs: be killed if the worker dies (PR_SET_PDEATHSIG)."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)


class Reporter(Protocol):
    """Where a build reports (``Progress`` in environments/base.py)."""

    cancelled: threading.Event

    def status(self, text: str) -> None: ...

    def output(self, code: str, data: bytes) -> None: ...


class BuildFailed(Exception):
    """The installer failed; the message holds its error (redacted)."""


def find_uv() -> str | None:
    """uv's binary: the one the ``uv`` package installed beside envflow, else PATH's."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        import shutil

        return shutil.which("uv")


def uv_environ(settings: Settings, allowed: Mapping[str, str], environ: Mapping[str, str],
               cache_root: Path) -> dict[str, str]:
    """The installer's environment: ``allowed`` (the flows' allowlist of the worker's variables, never
    its credentials), the worker's proxies, and envflow's settings for uv (indexes, cache, no config files).

    :param environ: the worker's whole environment, for its proxies and ``UV_CACHE_DIR``.
    """
    env = {k: v for k, v in allowed.items() if k not in DROPPED}
    env.update({k: v for k, v in environ.items() if k in PROXIES})
    env["UV_CACHE_DIR"] = environ.get("UV_CACHE_DIR") or str(cache_root / ".uv-cache")
    env.update({"UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1", "UV_NO_PROGRESS": "1", "UV_NO_CONFIG": "1"})
    if settings.pip_index_url:
        env["UV_INDEX_URL"] = settings.pip_index_url
    if settings.pip_extra_index_url:
        env["UV_EXTRA_INDEX_URL"] = " ".join(settings.pip_extra_index_url.split())
    if settings.pip_find_links:
        env["UV_FIND_LINKS"] = ",".join(settings.pip_find_links.split())
    return env


def index_inputs(settings: Settings) -> list[str]:
    """What of the index settings goes into a built env's key (credentials left out: rotating a
    token does not rebuild every env)."""
    redact = settings.redactor.text
    return [redact(settings.pip_index_url or ""), redact(settings.pip_extra_index_url or ""),
            redact(settings.pip_find_links or ""), "no-index" if settings.pip_no_index else ""]


class _Lines:
    """Redacts a byte stream line by line (a URL is never split between two redactions)."""

    def __init__(self, redact: object) -> None:
        self.redact = redact
        self.pending = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data = self.pending + data
        cut = len(data) if final or len(data) > READ_SIZE else data.rfind(b"\n") + 1
        self.pending = data[cut:]
        text = data[:cut].decode("utf-8", errors="surrogateescape")
        return self.redact(text).encode("utf-8", errors="surrogateescape")  # type: ignore[operator]


class Installer:
    """Runs uv for one build, reporting to ``reporter``."""

    def __init__(self, uv: str, environ: dict[str, str], cwd: Path, reporter: Reporter, settings: Settings) -> None:
        self.uv = uv
        self.environ = environ
        self.cwd = cwd
        self.reporter = reporter
        self.settings = settings

    def venv(self, target: Path, python: Path, prompt: str) -> None:
        self._run(["venv", "--quiet", "--relocatable", "--no-project", "--prompt", prompt, "--python", str(python),
                   str(target)])

    def install(self, target: Path, requirements: Path, require_hashes: bool) -> None:
        args = ["pip", "install", "--python", str(target / "bin" / "python"), "--link-mode", "copy",
                "--compile-bytecode", "--no-progress", "-r", str(requirements)]
        if require_hashes:
            args.append("--require-hashes")
        if self.settings.pip_no_index:
            args.append("--no-index")
        self._run(args)

    def _run(self, args: list[str]) -> None:
        """Run ``uv <args>``, relaying its output; kill its process group on a stop.

        :raises BuildFailed: it exited non-zero (with its stderr's end).
        :raises BuildCancelled: the reporter's ``cancelled`` was set.
        """
        proc = subprocess.Popen([self.uv, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=self.cwd, env=self.environ, start_new_session=True,
                                preexec_fn=_die_with_worker)
        assert proc.stdout is not None and proc.stderr is not None
        streams = {proc.stdout.fileno(): ("o", _Lines(self.settings.redactor.text)),
                   proc.stderr.fileno(): ("e", _Lines(self.settings.redactor.text))}
        errors = b""
        with selectors.DefaultSelector() as sel:
            for fd in streams:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            try:
                while sel.get_map():
                    if self.reporter.cancelled.is_set():
                        raise BuildCancelled("the run was stopped while its env was being built")
                    for key, _ in sel.select(0.1):
                        data = os.read(key.fd, READ_SIZE)
                        stream, lines = streams[key.fd]
                        shown = lines.feed(data, final=not data)
                        if not data:
                            sel.unregister(key.fd)
                        if shown:
                            self.reporter.output(stream, shown)
                            errors = (errors + shown)[-ERROR_TAIL:] if stream == "e" else errors
            except BaseException:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                raise
            finally:
                proc.stdout.close()
                proc.stderr.close()
        code = proc.wait()
        if code != 0:
            tail = errors.decode(errors="replace").strip()
            starts = [i for i in (tail.find("error:"), tail.find("×")) if i >= 0]  # uv's error, not what led to it
            tail = (tail[min(starts):] if starts else tail) or f"no output, exit status {code}"
            raise BuildFailed(f"uv {args[0]}{' ' + args[1] if args[0] == 'pip' else ''} failed: {tail}")
