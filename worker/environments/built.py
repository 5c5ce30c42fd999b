"""Envs built from requirements: a venv each worker host builds once with uv, caches by content, reuses.

An env's key is a sha256 of what decides its content: the normalized requirements, the requirements
file's digest, the base interpreter's real path and version, the machine, and the index settings.
The first run that needs a key builds it (its output shows the build live); concurrent runs wait for
that one build; later runs find it and activate it as a mounted venv, with no installer started.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import threading
import time
from pathlib import Path

from envflow.errors import EnvActivationError
from envflow.models import EnvKind, EnvSpec
from envflow.requirements import parse_file
from envflow.settings import Settings
from envflow.store import routing

from ..builds.cache import BuildCancelled, EnvStore, remove_tree
from ..builds.installer import BUILD_CWD, BuildFailed, Installer, find_uv, index_inputs, uv_environ
from .base import MIN_PYTHON, Environment, Locator, Progress
from .interpreters import VERSION, Interpreter, by_version, find_interpreter, trusted_roots
from .variables import flow_base
from .venv import VenvEnvironment

KEY_FORMAT = 1  # part of every key: a change to how envs are built changes it
REQUIREMENTS_NAME = "envflow-requirements.txt"  # what was installed, kept in the env


def env_key(spec: EnvSpec, base: Interpreter, settings: Settings) -> str:
    """The cache key of ``spec`` built from ``base`` with this worker's index settings."""
    inputs = {
        "format": KEY_FORMAT,
        "requirements": list(spec.requirements),
        "requirements_file": spec.requirements_digest,
        "python": [str(base.real), base.version_text],
        "machine": platform.machine(),
        "index": index_inputs(settings),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def build_key(spec: EnvSpec) -> str:
    """The routing key a run of ``spec`` needs: a worker that can build from its base interpreter."""
    return routing.route_key(spec) or ""


def can_build(python: str | None, resolver: Locator) -> bool:
    """Whether this worker can build envs from the base interpreter ``python`` (uv found, the
    interpreter found and recent enough)."""
    if find_uv() is None:
        return False
    try:
        return find_interpreter(python, resolver, resolver.cwd).version[:2] >= MIN_PYTHON
    except Exception:  # noqa: BLE001 - not found, outside the roots, does not run: cannot build here
        return False


def build_keys(resolver: Locator) -> set[str]:
    """The routing keys this worker can advertise: ``build:`` (its own Python), ``build:<conda env>``,
    and ``build:<X.Y>``/``build:<X.Y.Z>`` for the versions it finds (paths are checked with can_build)."""
    if find_uv() is None:
        return set()
    names = {""} | set(resolver.named_envs())
    trusted = trusted_roots(resolver.settings)
    for minor in range(MIN_PYTHON[1], 20):
        for path in by_version(f"3.{minor}", resolver.environ, trusted):
            version = path.resolve().parent.parent.name
            names |= {f"3.{minor}", *([version] if VERSION.match(version) else [])}
    return {f"build:{n}" for n in names if n == "" or can_build(n, resolver)}


class _Quiet:
    """A build's reporter when nobody follows it (``env check``): output is dropped, never cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def status(self, text: str) -> None:
        return None

    def output(self, code: str, data: bytes) -> None:
        return None


class BuiltEnvironment(VenvEnvironment):
    """A venv built from requirements, kept in the worker host's env cache (``ENVFLOW_ENV_CACHE``)."""

    kinds = (EnvKind.REQUIREMENTS,)
    path_kind = None
    field = "requirements"
    noun = "built env"
    marker = None
    marker_desc = ""
    label = "built"

    def __init__(self, spec: EnvSpec, prefix: Path, *, key: str, base: Interpreter, store: EnvStore,
                 resolver: Locator) -> None:
        super().__init__(spec, prefix)
        self.key = key
        self.base = base
        self.store = store
        self.resolver = resolver

    @classmethod
    def locate(cls, spec: EnvSpec, resolver: Locator) -> Environment:
        base = find_interpreter(spec.python, resolver, resolver.cwd)
        if base.version[:2] < MIN_PYTHON:
            raise EnvActivationError(f"python {spec.python or base.path!r} is Python {base.version_text}; "
                                     "flows need CPython 3.8 or newer")
        settings = resolver.settings
        key = env_key(spec, base, settings)
        store = EnvStore(settings.env_cache_dir)
        return cls(spec, store.path(key), key=key, base=base, store=store, resolver=resolver)

    @classmethod
    def available(cls, spec: EnvSpec, resolver: Locator) -> Environment:
        """Routing: this worker can run it when it can build it (uv and the base interpreter here)."""
        env = cls.locate(spec, resolver)
        if find_uv() is None:
            raise EnvActivationError("uv is not installed on this worker, so it cannot build envs")
        return env

    def python_version(self) -> tuple[int, ...] | None:
        return tuple(self.base.version)

    def describe(self) -> str:
        return f"built env {self.key[:12]} ({self.spec})"

    def materialize(self, progress: Progress | None) -> None:
        """Build the env unless this host has it, then hold it against eviction while it is used."""
        reporter = progress or _Quiet()
        built = False
        for _ in range(3):
            if self.store.exists(self.key) and self.store.pin(self.key, self._kept()):
                if built:
                    self._evict(reporter)
                return
            built |= self._build(reporter)
        raise EnvActivationError(f"{self.describe()} was evicted as soon as it was built; raise "
                                 "ENVFLOW_ENV_CACHE_MAX_BYTES above the size of the envs in use")

    def touch(self) -> None:
        if self.store.pin(self.key, self._kept()):
            self.store.touch(self.key)

    def _kept(self) -> int:
        """How many built envs this process keeps from eviction: its run's, and one per warm process."""
        return self.resolver.settings.warm_max + 1

    def _evict(self, reporter: Progress | _Quiet) -> None:
        for gone in self.store.evict(self.resolver.settings.env_cache_max_bytes):
            reporter.status(f"evicted built env {gone.key[:12]} ({gone.size / 2**20:.1f} MiB, least recently used)")

    def _build(self, reporter: Progress | _Quiet) -> bool:
        """Build the env under its build lock, unless another process built it meanwhile; True if built here."""
        def waiting() -> None:
            reporter.status(f"waiting for another build of env {self.key[:12]} on this host")

        try:
            fd = self.store.lock_build(self.key, reporter.cancelled, waiting)
        except BuildCancelled as e:
            raise EnvActivationError(f"{self.describe()}: {e}") from None
        try:
            if self.store.exists(self.key):
                return False
            self._build_locked(reporter)
            return True
        finally:
            self.store.unlock_build(fd)

    def _build_locked(self, reporter: Progress | _Quiet) -> None:
        uv = find_uv()
        if uv is None:
            raise EnvActivationError("cannot build envs on this worker: uv is not installed (pip install uv)")
        lines, require_hashes = self._requirements()
        temp = self.store.temp_dir(self.key)
        settings = self.resolver.settings
        environ = uv_environ(settings, flow_base(self.resolver.environ, settings), self.resolver.environ,
                             self.store.root)
        installer = Installer(uv, environ, BUILD_CWD, reporter, settings)
        reporter.status(f"building env {self.key[:12]} with uv: Python {self.base.version_text} "
                        f"({self.base.path}), {len(lines)} requirement{'s' * (len(lines) != 1)}")
        self.store.journal(self.key, "start", python=str(self.base.real))
        started = time.monotonic()
        try:
            installer.venv(temp, self.base.path, f"built-{self.key[:12]}")
            (temp / REQUIREMENTS_NAME).write_text("".join(f"{line}\n" for line in lines))
            installer.install(temp, temp / REQUIREMENTS_NAME, require_hashes)
            self.store.install(temp, self.key, self._meta(time.monotonic() - started))
        except BaseException as e:
            remove_tree(temp)
            event = "cancelled" if isinstance(e, BuildCancelled) else "failed"
            self.store.journal(self.key, event, error=str(e)[-500:])
            if isinstance(e, (BuildCancelled, BuildFailed)):
                outcome = "stopped" if event == "cancelled" else "failed"
                raise EnvActivationError(  # the run's output has uv's words already
                    f"building env {self.key[:12]} ({self.spec}) {outcome}: {e}",
                    shown=f"building env {self.key[:12]} {outcome}" + (
                        " (uv's output above)" if isinstance(e, BuildFailed) else "")) from None
            raise
        seconds = time.monotonic() - started
        self.store.journal(self.key, "built", seconds=round(seconds, 3))
        reporter.status(f"built env {self.key[:12]} in {seconds:.1f}s")

    def _requirements(self) -> tuple[list[str], bool]:
        """The lines to install (inline requirements, then the requirements file's) and hash-checking mode."""
        lines, require_hashes = list(self.spec.requirements), False
        if self.spec.requirements_digest:
            data = self.resolver.stored_requirements(self.spec.requirements_digest)
            parsed = parse_file(data.decode("utf-8"))
            lines += parsed.lines
            require_hashes = parsed.require_hashes
        return lines, require_hashes

    def _meta(self, seconds: float) -> dict[str, object]:
        return {
            "key": self.key,
            "requirements": list(self.spec.requirements),
            "requirements_digest": self.spec.requirements_digest,
            "python": self.spec.python,
            "base": str(self.base.real),
            "version": self.base.version_text,
            "built_at": time.time(),
            "build_seconds": round(seconds, 3),
            "host": socket.gethostname(),
        }
