"""Flow environments: finding the env a deployment names, and what activating it sets.

One contract, :class:`Environment`, with three kinds: the worker's own interpreter, a
venv/virtualenv directory, and a conda env (by name or prefix). Each knows its
interpreter, the files whose change invalidates a cached activation, and how to compute
its activation: the variables to set and unset, as ``conda activate`` or a venv's
``bin/activate`` would.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from envflow.errors import EnvActivationError
from envflow.models import EnvKind, EnvSpec
from envflow.settings import Settings

# Variables of the worker's own process that never reach a flow, even where passed on purpose.
SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__")
# The worker's variables a flow gets (an allowlist: the worker's Redis URL, REDIS_*/REDISCLI_AUTH and
# every other setting stay out). ENVFLOW_PASS_ENV adds names; a deployment's env={...} adds values.
PASSED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "TEMP", "TMP",
    "HOSTNAME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
})
PASSED_PREFIXES = ("LC_", "CONDA_", "_CE_", "_CONDA_", "MAMBA_")  # locale and conda's own bookkeeping
MIN_PYTHON = (3, 8)

Delta = dict[str, str | None]  # variable -> new value, or None to unset it


def flow_base(environ: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The part of the worker's environment a flow starts from (before its env's activation)."""
    extra = [g.strip() for g in settings.pass_env.split(",") if g.strip()]
    base = {}
    for name, value in environ.items():
        if name in PASSED or (name.startswith(PASSED_PREFIXES) and not settings.is_secret_name(name)):
            base[name] = value
        elif extra and any(fnmatch.fnmatchcase(name, glob) for glob in extra):
            base[name] = value
    return base


def _path_prepend(directory: str, path: str | None) -> str:
    parts = [p for p in (path or "").split(os.pathsep) if p and p != directory]
    return os.pathsep.join([directory, *parts])


class Environment(ABC):
    """An environment a flow can run in."""

    kind: EnvKind

    def __init__(self, spec: EnvSpec, prefix: Path) -> None:
        self.spec = spec
        self.prefix = prefix

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


class WorkerEnvironment(Environment):
    """The worker's own interpreter (a deployment without condaenv or virtualenv)."""

    kind = EnvKind.WORKER

    def __init__(self) -> None:
        super().__init__(EnvSpec(), Path(sys.prefix))

    @property
    def python(self) -> Path:
        return Path(sys.executable)

    def activation(self, base: Mapping[str, str], timeout: float) -> Delta:
        return {}

    def python_version(self) -> tuple[int, ...]:
        return tuple(sys.version_info[:3])

    def describe(self) -> str:
        return f"the worker's environment ({sys.prefix})"


def read_pyvenv_cfg(prefix: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = (prefix / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    return values


class VenvEnvironment(Environment):
    """A venv or virtualenv directory (``pyvenv.cfg`` and ``bin/python``)."""

    kind = EnvKind.VENV

    @property
    def python(self) -> Path:
        for name in ("python", "python3"):
            candidate = self.prefix / "bin" / name
            if candidate.exists() or candidate.is_symlink():
                return candidate
        return self.prefix / "bin" / "python"

    def watched_paths(self) -> list[Path]:
        return [self.prefix / "pyvenv.cfg", self.python, self.prefix / "bin", *self.site_packages()]

    def python_version(self) -> tuple[int, ...] | None:
        cfg = read_pyvenv_cfg(self.prefix)
        text = cfg.get("version_info") or cfg.get("version")
        if not text:
            return None
        return tuple(int(p) for p in re.findall(r"\d+", text)[:3])

    def activation(self, base: Mapping[str, str], timeout: float) -> Delta:
        prompt = read_pyvenv_cfg(self.prefix).get("prompt", "").strip("'\"") or self.prefix.name
        return {
            "VIRTUAL_ENV": str(self.prefix),
            "VIRTUAL_ENV_PROMPT": f"({prompt}) ",
            "PATH": _path_prepend(str(self.prefix / "bin"), base.get("PATH")),
        }

    def _dangling_message(self, python: Path) -> str:
        home = read_pyvenv_cfg(self.prefix).get("home", "an unknown directory")
        return (
            f"venv {self.prefix}: its interpreter {python} is a link to {os.readlink(python)}, which does not "
            f"exist on this worker; the venv was made with the Python in {home}, probably on another machine. "
            f"Make venvs with an interpreter the worker has: "
            f"`envflow venv create {self.prefix} --python ENV_OR_PATH -r requirements.txt`"
        )


class CondaEnvironment(Environment):
    """A conda env, named or given by its prefix (``conda-meta/`` marks it)."""

    kind = EnvKind.CONDA

    def __init__(self, spec: EnvSpec, prefix: Path, root: Path | None, envs_dirs: list[Path]) -> None:
        super().__init__(spec, prefix)
        self.root = root
        self.envs_dirs = envs_dirs

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def default_env(self) -> str:
        """What conda calls the env in CONDA_DEFAULT_ENV: 'base', its name, or its prefix."""
        if self.root is not None and self.prefix == self.root:
            return "base"
        if any(self.prefix.parent == d for d in self.envs_dirs):
            return self.prefix.name
        return str(self.prefix)

    def watched_paths(self) -> list[Path]:
        meta = self.prefix / "conda-meta"
        activate_d = self.prefix / "etc" / "conda" / "activate.d"
        paths = [meta, meta / "state", meta / "history", activate_d, self.python, *self.site_packages()]
        if activate_d.is_dir():
            paths.extend(sorted(activate_d.iterdir()))
        return paths

    def python_version(self) -> tuple[int, ...] | None:
        for record in (self.prefix / "conda-meta").glob("python-[0-9]*.json"):
            match = re.match(r"python-(\d+)\.(\d+)\.(\d+)", record.name)
            if match:
                return tuple(int(g) for g in match.groups())
        return None

    def config_vars(self) -> dict[str, str]:
        """The env's ``conda env config vars`` (kept in ``conda-meta/state``)."""
        state = self.prefix / "conda-meta" / "state"
        try:
            data = json.loads(state.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise EnvActivationError(f"{self.describe()}: cannot read {state}: {e}") from None
        env_vars = data.get("env_vars", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in env_vars.items()}

    def activate_scripts(self) -> list[Path]:
        folder = self.prefix / "etc" / "conda" / "activate.d"
        return sorted(folder.glob("*.sh")) if folder.is_dir() else []

    def activation(self, base: Mapping[str, str], timeout: float) -> Delta:
        from .activation import conda_activation

        return conda_activation(self, base, timeout)
