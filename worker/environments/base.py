"""The contract every environment kind implements, and the registry that finds a kind.

An :class:`Environment` subclass names the spec kinds it serves (``EnvKind``), the deployment
field that asks for it, and what marks a directory as one; resolution, ``env ls`` and
``env check`` find kinds through these registrations, so a new kind is one new subclass.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Protocol

from envflow.errors import EnvActivationError
from envflow.models import EnvKind, EnvSpec
from envflow.settings import Settings

from .shell import Delta

MIN_PYTHON = (3, 8)


class Progress(Protocol):
    """What making an env exist reports while it goes (from the preparing thread): envflow status
    lines and a tool's own output, shown live in the run's output; and whether to give up."""

    cancelled: threading.Event  # set when the run is cancelled or timed out: stop, clean up, raise

    def status(self, text: str) -> None: ...

    def output(self, code: str, data: bytes) -> None: ...  # code "o" (stdout) or "e" (stderr)


class Locator(Protocol):
    """What a kind needs from the worker's resolver (``resolve.py``) to find its envs."""

    environ: dict[str, str]
    settings: Settings
    cwd: Path

    def locate_directory(self, spec: EnvSpec, kind: type[Environment]) -> Path: ...

    def named_conda(self, name: str) -> Path: ...

    def named_envs(self) -> dict[str, Path]: ...

    def real_root(self) -> Path | None: ...

    def stored_requirements(self, digest: str) -> bytes: ...  # a deployment's requirements file, checked

_KINDS: list[type[Environment]] = []


class Environment(ABC):
    """An environment a flow can run in.

    Subclasses register themselves; they say which spec kinds they serve (``kinds``), the
    deployment field that names them (``field``), how a directory of theirs is marked
    (``marker``, a file or directory in it) and how ``env ls`` labels one (``label``).
    """

    kinds: ClassVar[tuple[EnvKind, ...]] = ()
    path_kind: ClassVar[EnvKind | None] = None  # the kind a directory with this marker is given as
    field: ClassVar[str | None] = None  # "virtualenv", "condaenv"
    noun: ClassVar[str] = "env"  # in messages: "is not a <noun>"
    marker: ClassVar[str | None] = None  # "pyvenv.cfg", "conda-meta/"
    marker_desc: ClassVar[str] = ""  # the marker in messages: "no conda-meta/ directory"
    label: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kinds:
            _KINDS.append(cls)

    @classmethod
    def marks(cls, path: Path) -> bool:
        """Whether ``path`` is a directory of this kind."""
        if cls.marker is None:
            return False
        inside = path / cls.marker.rstrip("/")
        return inside.is_dir() if cls.marker.endswith("/") else inside.is_file()

    @classmethod
    def available(cls, spec: EnvSpec, resolver: Locator) -> Environment:
        """The env ``spec`` names, when a run of it can start on this worker (routing advertises it).

        :raises EnvflowError: it cannot.
        """
        env = cls.locate(spec, resolver)
        env.check_python()
        return env

    @classmethod
    @abstractmethod
    def locate(cls, spec: EnvSpec, resolver: Locator) -> Environment:
        """The environment ``spec`` names on this worker.

        :raises EnvNotFound: it does not exist, or is not of this kind.
        :raises EnvActivationError: it is outside the allowed roots.
        """

    def __init__(self, spec: EnvSpec, prefix: Path) -> None:
        self.spec = spec
        self.prefix = prefix
        self.warnings: list[str] = []  # what activation ignored, for the worker log and `env check`

    @property
    @abstractmethod
    def python(self) -> Path:
        """The interpreter a run starts."""

    @abstractmethod
    def activation(self, base: Mapping[str, str], timeout: float) -> Delta:
        """The variables activation sets (value) or unsets (None), given the worker's environment."""

    def watched_paths(self) -> list[Path]:
        """Paths whose change (mtime, size, link target) invalidates the cached activation."""
        return [self.python]

    def site_packages(self) -> list[Path]:
        """The env's site-packages directories: an install there changes their mtime, and an
        interpreter started before it would not see new .pth files."""
        if not hasattr(self, "_site_packages"):
            self._site_packages = sorted(self.prefix.glob("lib/python3*/site-packages"))
        return self._site_packages

    def python_version(self) -> tuple[int, ...] | None:
        """The interpreter's version when the env's metadata tells it without running anything."""
        return None

    def describe(self) -> str:
        return f"{self.spec} ({self.prefix})"

    def materialize(self, progress: Progress | None) -> None:
        """Make the env exist on this worker before it is activated. Envs that are made elsewhere
        (baked, mounted) just exist; kinds built on demand build here, reporting to ``progress``."""
        return None

    def touch(self) -> None:
        """Note that a run uses the env now (kinds with a cache keep its last use)."""
        return None

    def check_python(self) -> None:
        """Fail clearly when the interpreter is missing, dangling or too old for the bootstrap."""
        python = self.python
        if not python.exists():
            if python.is_symlink():
                raise EnvActivationError(self._dangling_message(python))
            raise EnvActivationError(f"{self.describe()}: no interpreter at {python}")
        version = self.python_version()
        if version is not None and version[:2] < MIN_PYTHON:
            raise EnvActivationError(
                f"{self.describe()} has Python {'.'.join(map(str, version))}; flows need CPython 3.8 or newer"
            )

    def _dangling_message(self, python: Path) -> str:
        return f"{self.describe()}: its interpreter {python} is a link to {os.readlink(python)}, which does not exist"


def kind_for(spec: EnvSpec) -> type[Environment]:
    """The environment class serving ``spec``'s kind."""
    for cls in _KINDS:
        if spec.kind in cls.kinds:
            return cls
    raise LookupError(f"no environment kind serves {spec.kind.value!r}")


def detect(path: Path) -> type[Environment] | None:
    """The kind whose marker ``path`` has, if any."""
    return next((cls for cls in _KINDS if cls.marks(path)), None)


def directory_kinds() -> list[type[Environment]]:
    """The kinds a directory can be (those with a marker)."""
    return [cls for cls in _KINDS if cls.marker is not None]

