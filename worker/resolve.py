"""Finding the environment an env spec names, the way conda and the worker's filesystem say.

Named conda envs follow conda's own order: ``conda env list --json`` when ``conda`` is on
PATH; otherwise the envs dirs (``CONDA_ENVS_PATH``/``CONDA_ENVS_DIRS``, ``<root>/envs``,
``~/.conda/envs``) and ``~/.conda/environments.txt``. ``base`` is the root prefix.
Every env must live under an allowed root (``ENVFLOW_ENV_ROOTS``) after following links.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from redis import Redis

from envflow.errors import EnvActivationError, EnvNotFound
from envflow.models import EnvSpec
from envflow.settings import Settings
from envflow.store import keys

from .environments import Environment, detect, kind_for

DEFAULT_VENV_ROOT = Path("/venvs")
CONDA_LIST_TTL = 30.0  # seconds a `conda env list` answer is reused


class EnvResolver:
    """Resolves env specs for one worker (its settings, environment variables and directory)."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None, cwd: Path | None = None,
                 redis: Redis | None = None) -> None:
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.cwd = (cwd or Path.cwd()).resolve()
        self.redis = redis  # where requirements files stored with deployments are read
        self._conda_listing: tuple[float, dict[str, Path]] | None = None

    def stored_requirements(self, digest: str) -> bytes:
        """The requirements file stored under ``digest``, checked against it.

        :raises EnvNotFound: it is missing (or this resolver has no Redis), or does not match.
        """
        raw = self.redis.get(keys.requirements(digest)) if self.redis is not None else None
        if raw is None:
            raise EnvNotFound(f"the requirements file (sha256 {digest[:12]}) is missing from Redis; register the "
                              "deployment again with `envflow deployment create`")
        if hashlib.sha256(raw).hexdigest() != digest:
            raise EnvNotFound(f"the requirements file in Redis does not match its digest {digest[:12]}")
        return raw

    # Where conda lives

    @property
    def conda_exe(self) -> str | None:
        return shutil.which("conda", path=self.environ.get("PATH"))

    def conda_root(self) -> Path | None:
        if self.settings.conda_root:
            return self.settings.conda_root.expanduser()
        for name in ("CONDA_ROOT", "MAMBA_ROOT_PREFIX"):
            if self.environ.get(name):
                return Path(self.environ[name]).expanduser()
        exe = self.environ.get("CONDA_EXE") or self.conda_exe
        if exe:
            # <root>/bin/conda or <root>/condabin/conda
            return Path(exe).resolve().parent.parent
        return None

    def envs_dirs(self) -> list[Path]:
        dirs: list[Path] = []
        for name in ("CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
            dirs += [Path(p).expanduser() for p in self.environ.get(name, "").split(os.pathsep) if p]
        root = self.conda_root()
        if root is not None:
            dirs.append(root / "envs")
        dirs.append(Path(self.environ.get("HOME", "~")).expanduser() / ".conda" / "envs")
        return list(dict.fromkeys(dirs))

    def allowed_roots(self) -> list[Path]:
        if self.settings.env_roots:
            roots = [Path(p).expanduser() for p in self.settings.env_roots.split(os.pathsep) if p]
        else:
            root = self.conda_root()  # and the user's home: a venv in ~/envs or the like (the image sets its own)
            home = Path(self.environ.get("HOME") or "~").expanduser()
            roots = [*([root] if root else []), *self.envs_dirs(), DEFAULT_VENV_ROOT, self.cwd, home]
        return [r if not r.exists() else r.resolve() for r in dict.fromkeys(roots)]

    def named_envs(self, refresh: bool = False) -> dict[str, Path]:
        """Named conda envs, first one of each name winning, as conda orders them."""
        exe = self.conda_exe
        if exe:
            if refresh or self._conda_listing is None or time.monotonic() - self._conda_listing[0] > CONDA_LIST_TTL:
                self._conda_listing = (time.monotonic(), self._list_with_conda(exe))
            return self._conda_listing[1]
        found: dict[str, Path] = {}
        root = self.conda_root()
        if root is not None and (root / "conda-meta").is_dir():
            found["base"] = root
        for envs_dir in self.envs_dirs():
            if envs_dir.is_dir():
                for child in sorted(envs_dir.iterdir()):
                    if (child / "conda-meta").is_dir():
                        found.setdefault(child.name, child)
        registry = Path(self.environ.get("HOME", "~")).expanduser() / ".conda" / "environments.txt"
        if registry.is_file():
            for line in registry.read_text(errors="replace").splitlines():
                prefix = Path(line.strip())
                if line.strip() and (prefix / "conda-meta").is_dir():
                    found.setdefault(prefix.name, prefix)
        return found

    def _list_with_conda(self, exe: str) -> dict[str, Path]:
        try:
            out = subprocess.run(
                [exe, "env", "list", "--json"], capture_output=True, timeout=60, check=True, env=self.environ
            ).stdout
            prefixes = [Path(p) for p in json.loads(out).get("envs", [])]
        except (subprocess.SubprocessError, OSError, ValueError) as e:
            raise EnvActivationError(f"`conda env list --json` failed: {e}") from None
        root = self.conda_root()
        found: dict[str, Path] = {}
        for prefix in prefixes:
            found.setdefault("base" if root is not None and prefix == root else prefix.name, prefix)
        return found

    # Resolution

    def resolve(self, spec: EnvSpec) -> Environment:
        """The environment ``spec`` names on this worker.

        :raises EnvNotFound: the env or path does not exist, or is not an env of that kind.
        :raises EnvActivationError: the env is outside the allowed roots.
        """
        return kind_for(spec).locate(spec, self)

    def locate_directory(self, spec: EnvSpec, kind: type[Environment]) -> Path:
        """The real path of the directory ``spec`` gives, checked to be of ``kind`` and allowed.

        :raises EnvNotFound: it does not exist, or is not of ``kind`` (saying which kind it is).
        :raises EnvActivationError: it is outside the allowed roots.
        """
        given = spec.value or ""
        path = Path(given).expanduser()
        resolved = path if path.is_absolute() else self.cwd / path
        if not resolved.exists():
            raise EnvNotFound(
                f"{kind.field or 'env'} {given!r} does not exist: resolved to {resolved} "
                f"(relative paths start at the worker's directory, {self.cwd})"
            )
        real = resolved.resolve()
        if not kind.marks(real):
            other = detect(real)
            hint = f"; it has {other.marker}, so it is a {other.noun}: use {other.field}=" if other else ""
            raise EnvNotFound(f"{given!r} ({real}) is not a {kind.noun}: it has no {kind.marker_desc}{hint}")
        self._check_allowed(real, given)
        return real

    def named_conda(self, name: str) -> Path:
        """The real prefix of the conda env called ``name``, checked to be allowed."""
        envs = self.named_envs()
        if name not in envs and self.conda_exe:
            envs = self.named_envs(refresh=True)
        if name not in envs:
            names = ", ".join(sorted(envs)) or "none"
            where = (
                "`conda env list`"
                if self.conda_exe
                else ", ".join(str(d) for d in self.envs_dirs()) + ", ~/.conda/environments.txt"
            )
            raise EnvNotFound(
                f"no conda env named {name!r} on this worker (found: {names}; looked in {where}); "
                "create it, or give its prefix path"
            )
        real = envs[name].resolve()
        self._check_allowed(real, name)
        return real

    def real_root(self) -> Path | None:
        root = self.conda_root()
        return root.resolve() if root is not None and root.exists() else root

    def _check_allowed(self, real: Path, given: str) -> None:
        roots = self.allowed_roots()
        if not any(real == r or real.is_relative_to(r) for r in roots):
            shown = os.pathsep.join(str(r) for r in roots)
            raise EnvActivationError(
                f"env {given!r} ({real}) is outside the allowed env roots ({shown}); add {real.parent} to "
                f"ENVFLOW_ENV_ROOTS (':'-separated) where the worker starts, or move the env under one of them"
            )
