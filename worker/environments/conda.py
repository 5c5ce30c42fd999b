"""conda envs, named or given by their prefix (``conda-meta/`` marks one)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from envflow.errors import EnvActivationError
from envflow.models import EnvKind, EnvSpec

from .base import Delta, Environment

if TYPE_CHECKING:
    from ..resolve import EnvResolver


def conda_scripts(prefix: Path, folder: str) -> list[Path]:
    """The ``*.sh`` scripts of ``<prefix>/etc/conda/<folder>``, in the order conda sources them:
    by name, and by reverse name for ``deactivate.d`` (``_get_activate_scripts``,
    ``_get_deactivate_scripts`` in conda's ``activate.py``)."""
    directory = prefix / "etc" / "conda" / folder
    scripts = sorted(directory.glob("*.sh")) if directory.is_dir() else []
    return scripts[::-1] if folder == "deactivate.d" else scripts


def _read_json(path: Path, what: str) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EnvActivationError(f"{what}: cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise EnvActivationError(f"{what}: {path} does not hold a JSON object")
    return data


class CondaEnvironment(Environment):
    """A conda env, named or given by its prefix (``conda-meta/`` marks it)."""

    kinds = (EnvKind.CONDA, EnvKind.CONDA_PREFIX)
    path_kind = EnvKind.CONDA_PREFIX
    field = "condaenv"
    noun = "conda env"
    marker = "conda-meta/"
    marker_desc = "conda-meta/ directory"
    label = "conda-prefix"

    @classmethod
    def locate(cls, spec: EnvSpec, resolver: EnvResolver) -> Environment:
        if spec.kind is EnvKind.CONDA:
            prefix = resolver.named_conda(spec.value or "")
        else:
            prefix = resolver.locate_directory(spec, cls)
        return cls(spec, prefix, resolver.real_root(), resolver.environ)

    def __init__(self, spec: EnvSpec, prefix: Path, root: Path | None, environ: Mapping[str, str] | None = None) -> None:
        """
        :param root: the conda root prefix, when known.
        :param environ: the worker's environment (its condarc files and active env are watched).
        """
        super().__init__(spec, prefix)
        self.root = root
        self.environ = dict(environ or {})

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def has_conda(self) -> bool:
        """Whether the conda root is known and has ``bin/conda``."""
        return self.root is not None and (self.root / "bin" / "conda").exists()

    def watched_paths(self) -> list[Path]:
        from ..conda_config import watched

        meta = self.prefix / "conda-meta"
        paths = [meta, meta / "state", meta / "history", self.python, *self.site_packages()]
        folders = [self.prefix / "etc" / "conda" / f for f in ("activate.d", "deactivate.d", "env_vars.d")]
        if self.environ.get("CONDA_PREFIX"):  # its deactivate.d runs when it is replaced
            folders.append(Path(self.environ["CONDA_PREFIX"]) / "etc" / "conda" / "deactivate.d")
        for folder in folders:
            paths.append(folder)
            if folder.is_dir():
                paths.extend(sorted(folder.iterdir()))
        if self.root is not None:
            paths.append(self.root / "bin" / "conda")
        return [*paths, *watched(self.root, self.environ)]

    def python_version(self) -> tuple[int, ...] | None:
        for record in (self.prefix / "conda-meta").glob("python-[0-9]*.json"):
            match = re.match(r"python-(\d+)\.(\d+)\.(\d+)", record.name)
            if match:
                return tuple(int(g) for g in match.groups())
        return None

    def env_vars(self) -> dict[str, object]:
        """The env's variables as conda reads them (``_get_environment_env_vars``): those of its
        packages (every file in ``etc/conda/env_vars.d``, in name order), then its
        ``conda env config vars`` (``conda-meta/state``), which win. Unfiltered: values may be
        ``***unset***``, null or not strings."""
        found: dict[str, object] = {}
        packages = self.prefix / "etc" / "conda" / "env_vars.d"
        if packages.is_dir():
            for path in sorted(packages.iterdir()):
                found.update(_read_json(path, self.describe()))
        state = self.prefix / "conda-meta" / "state"
        if state.exists():
            env_vars = _read_json(state, self.describe()).get("env_vars") or {}
            if not isinstance(env_vars, dict):
                raise EnvActivationError(f"{self.describe()}: env_vars in {state} is not a JSON object")
            found.update(env_vars)
        return {str(k): v for k, v in found.items()}

    def activate_scripts(self) -> list[Path]:
        return conda_scripts(self.prefix, "activate.d")

    def activation(self, base: Mapping[str, str], timeout: float) -> Delta:
        from ..activation import conda_activation

        return conda_activation(self, base, timeout)
