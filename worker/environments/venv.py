"""venv and virtualenv directories (``pyvenv.cfg`` and ``bin/python``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from envflow.models import EnvKind, EnvSpec

from .base import Environment, Locator
from .shell import Delta


def _path_prepend(directory: str, path: str | None) -> str:
    parts = [p for p in (path or "").split(os.pathsep) if p and p != directory]
    return os.pathsep.join([directory, *parts])


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

    kinds = (EnvKind.VENV,)
    path_kind: ClassVar[EnvKind | None] = EnvKind.VENV
    field = "virtualenv"
    noun = "venv or virtualenv"
    marker: ClassVar[str | None] = "pyvenv.cfg"
    marker_desc = "pyvenv.cfg"
    label = "venv"

    @classmethod
    def locate(cls, spec: EnvSpec, resolver: Locator) -> Environment:
        return cls(spec, resolver.locate_directory(spec, cls))

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
