"""The worker's own interpreter: a deployment that names no environment."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from envflow.models import EnvKind, EnvSpec

from .base import Environment, Locator
from .shell import Delta


class WorkerEnvironment(Environment):
    """The worker's own interpreter (a deployment without condaenv or virtualenv)."""

    kinds = (EnvKind.WORKER,)
    label = "worker"

    @classmethod
    def locate(cls, spec: EnvSpec, resolver: Locator) -> Environment:
        return cls()

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
