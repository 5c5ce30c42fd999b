"""Finding a base interpreter by what a user calls it: a path, a conda env's name, or a version.

``envflow venv create --python`` and built envs' ``python=`` both go through :func:`find_interpreter`,
so a name means the same thing to both. A version (``3.12``, ``3.8.18``) is looked for among pyenv's
interpreters (``$PYENV_ROOT``, else ``~/.pyenv``) and then PATH's ``pythonX.Y`` (pyenv's shims
skipped: they answer for whichever version is selected, not for the one named). One found under the
flows' ``HOME`` (the worker's, which flows get and can write) is refused, never run, unless it lies
in an explicit ``ENVFLOW_ENV_ROOTS`` root: a flow could have planted it there for a later build.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from envflow.errors import EnvActivationError, EnvNotFound
from envflow.settings import Settings

from .base import Locator

VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
PROBE = "import platform, sys; print(platform.python_version()); print(sys.implementation.name)"
_probed: dict[tuple[str, int, int], tuple[int, ...]] = {}  # (real path, mtime, size) -> version


@dataclass(frozen=True)
class Interpreter:
    """A base interpreter on this machine."""

    path: Path  # as found (a link in a conda env or pyenv's bin, possibly)
    real: Path  # links followed: what identifies it in a built env's hash
    version: tuple[int, ...]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def probe(path: Path) -> Interpreter:
    """The interpreter at ``path``, with its version (asked once per file and change).

    :raises EnvActivationError: it does not run, or is not CPython.
    """
    real = path.resolve()
    try:
        st = real.stat()
    except OSError as e:
        raise EnvNotFound(f"no interpreter at {path}: {e.strerror}") from None
    key = (str(real), st.st_mtime_ns, st.st_size)
    if key not in _probed:
        try:
            done = subprocess.run([str(path), "-c", PROBE], capture_output=True, timeout=30, check=True,
                                  env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            raise EnvActivationError(f"the interpreter {path} does not run: {e}") from None
        version, implementation = done.stdout.decode(errors="replace").split()[:2]
        if implementation != "cpython":
            raise EnvActivationError(f"the interpreter {path} is {implementation}; flows need CPython")
        _probed[key] = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    return Interpreter(path, real, _probed[key])


def pyenv_root(environ: dict[str, str]) -> Path:
    return Path(environ.get("PYENV_ROOT") or Path(environ.get("HOME", "~")).expanduser() / ".pyenv")


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def flows_homes(environ: Mapping[str, str]) -> list[Path]:
    """The homes flows can write: the ``HOME`` they get (the worker's) and this uid's own."""
    homes = [environ.get("HOME")]
    try:
        homes.append(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    found = [Path(h).expanduser().resolve() for h in homes if h]
    return list(dict.fromkeys(h for h in found if h != Path("/")))  # HOME=/ (daemons): no home of flows


def trusted_roots(settings: Settings) -> list[Path]:
    """The operator's explicit ``ENVFLOW_ENV_ROOTS``: interpreters there are trusted wherever they are."""
    roots = settings.env_roots or ""
    return [Path(p).expanduser().resolve() for p in roots.split(os.pathsep) if p]


def planted_risk(path: Path, environ: Mapping[str, str], trusted: Sequence[Path] = ()) -> Path | None:
    """The flow-writable home ``path`` lies in (as found or with links followed), or None when it is
    outside every such home or inside a trusted root within it."""
    places = [Path(os.path.abspath(path)), path.resolve()]
    for home in flows_homes(environ):
        if any(place.is_relative_to(home) for place in places):
            # A root vouches for a part of the home (~/.pyenv), not for a root above it (/home).
            vouched = [r for r in trusted if r.is_relative_to(home) and r != home]
            if not any(place.is_relative_to(root) for place in places for root in vouched):
                return home
    return None


def by_version(version: str, environ: dict[str, str], trusted: Sequence[Path] = ()) -> list[Path]:
    """Interpreters that claim ``version`` (``X.Y`` or ``X.Y.Z``), best first: pyenv's (newest patch
    first), then PATH's ``pythonX.Y``; none from a home flows can write (:func:`planted_risk`)."""
    return [p for p in _candidates(version, environ) if planted_risk(p, environ, trusted) is None]


def _candidates(version: str, environ: dict[str, str]) -> list[Path]:
    match = VERSION.match(version)
    assert match is not None
    minor = f"{match[1]}.{match[2]}"
    found: list[Path] = []
    versions = pyenv_root(environ) / "versions"
    if versions.is_dir():
        names = [d.name for d in versions.iterdir() if d.name == version or (not match[3] and
                                                                              re.fullmatch(rf"{re.escape(minor)}\.\d+", d.name))]
        found += [versions / n / "bin" / f"python{minor}" for n in sorted(names, key=_numbers, reverse=True)]
    for directory in environ.get("PATH", "").split(os.pathsep):
        if directory and "shims" not in Path(directory).parts:
            hit = shutil.which(f"python{minor}", path=directory)
            if hit:
                found.append(Path(hit))
    return [p for p in dict.fromkeys(found) if p.exists()]


def find_interpreter(name: str | None, resolver: Locator, cwd: Path | None = None) -> Interpreter:
    """The base interpreter ``name`` names on this machine.

    :param name: a path (an interpreter, or an env directory with ``bin/python``), a conda env's name,
        a version (``3.12``), or None for the Python this process runs on (its base interpreter).
    :raises EnvNotFound: nothing by that name; the message says where envflow looked.
    """
    if name is None:
        return probe(Path(getattr(sys, "_base_executable", sys.executable)))
    if name.startswith(("/", "~", ".")) or "/" in name:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else (cwd or Path.cwd()) / path
        if path.is_dir():
            path = path / "bin" / "python"
        if not path.exists():
            raise EnvNotFound(f"python {name!r}: no interpreter at {path}")
        return probe(path)
    try:
        return probe(resolver.named_conda(name) / "bin" / "python")
    except EnvNotFound as not_conda:
        if not VERSION.match(name):
            raise EnvNotFound(f"python {name!r}: {not_conda}; or give a path, or a version such as '3.12'") from None
    wanted = _numbers(name)
    trusted = trusted_roots(resolver.settings)
    for candidate in by_version(name, resolver.environ, trusted):
        interpreter = probe(candidate)
        if interpreter.version[: len(wanted)] == wanted:
            return interpreter
    refused = [(p, planted_risk(p, resolver.environ, trusted)) for p in _candidates(name, resolver.environ)]
    refused = [(p, home) for p, home in refused if home is not None]
    if refused:
        path, home = refused[0]
        raise EnvNotFound(
            f"python {name!r}: refused {path}{f' (and {len(refused) - 1} more)' * (len(refused) > 1)}: it is under "
            f"{home}, the flows' HOME, which any flow can write; install Python {name} outside it (e.g. "
            f"PYENV_ROOT=/opt/pyenv) or add its directory to ENVFLOW_ENV_ROOTS"
        )
    raise EnvNotFound(
        f"python {name!r}: no Python {name} on this worker (looked in {pyenv_root(resolver.environ)}/versions "
        f"and PATH's python{'.'.join(name.split('.')[:2])}); install it there, or name a conda env or a path"
    )
