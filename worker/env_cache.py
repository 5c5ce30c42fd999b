"""Per-worker cache of resolved environments and their activations.

An activation is computed once per env and reused until one of the env's watched files
changes (``conda-meta/``, ``activate.d/``, ``pyvenv.cfg``, the interpreter); checking that
costs a few ``stat`` calls, never a shell or ``conda``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from envflow.models import EnvSpec
from envflow.settings import Settings

from .environments import SCRUBBED, Delta, Environment, Progress
from .environments.shell import apply
from .resolve import EnvResolver

Fingerprint = tuple[tuple[int, int, int] | None, ...]


def _stamp(path: Path | str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows links: a re-pointed or removed interpreter changes it
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def fingerprint(paths: list[Path] | list[str]) -> Fingerprint:
    return tuple(_stamp(p) for p in paths)


@dataclass
class Prepared:
    """Everything a run needs from its environment."""

    environment: Environment
    python: Path
    variables: dict[str, str]  # the flow process's complete environment
    delta: Delta  # what activation set (None: unset), for display
    stamp: Fingerprint = ()  # the env's files when it was activated


@dataclass
class _Entry:
    environment: Environment
    stamp: Fingerprint
    delta: Delta
    # The watched paths when it was activated. Any change to the list (a file added to a watched
    # folder, one removed) changes a stamp too, so the check need not list the folders again.
    paths: list[str]


class EnvCache:
    def __init__(self, settings: Settings, resolver: EnvResolver | None = None, redis: Redis | None = None) -> None:
        """:param redis: where built envs read the requirements files stored with deployments."""
        self.settings = settings
        self.resolver = resolver or EnvResolver(settings, redis=redis)
        self._entries: dict[EnvSpec, _Entry] = {}
        self.misses = 0

    def cached(
        self, spec: EnvSpec, base: Mapping[str, str], extra: Mapping[str, str] | None = None
    ) -> Prepared | None:
        """``prepare(spec)`` when the activation is cached and its env unchanged (a few stat calls,
        no shell); None when it must be computed again."""
        entry = self._entries.get(spec)
        if entry is None:
            return None
        entry.environment.touch()  # before the check: a built env held by a run is not evicted after it
        if fingerprint(entry.paths) != entry.stamp:
            return None
        return self._prepared(entry, base, extra)

    def prepare(
        self,
        spec: EnvSpec,
        base: Mapping[str, str],
        extra: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Prepared:
        """Resolve, make (``Environment.materialize``) and activate ``spec`` (cached), then build the
        flow's environment variables.

        :param base: the worker's own environment.
        :param extra: the deployment's ``env={...}``, applied last.
        :param progress: where making the env reports, live.
        """
        prepared = self.cached(spec, base, extra)
        if prepared is not None:
            return prepared
        self.misses += 1
        environment = self.resolver.resolve(spec)
        environment.materialize(progress)
        environment.check_python()
        paths = [str(p) for p in environment.watched_paths()]
        stamp = fingerprint(paths)
        delta = environment.activation(base, self.settings.activation_timeout)
        entry = self._entries[spec] = _Entry(environment, stamp, delta, paths)
        return self._prepared(entry, base, extra)

    @staticmethod
    def _prepared(entry: _Entry, base: Mapping[str, str], extra: Mapping[str, str] | None) -> Prepared:
        variables = apply({k: v for k, v in base.items() if k not in SCRUBBED}, entry.delta)
        for name in SCRUBBED:
            variables.pop(name, None)
        if extra:
            variables.update(extra)
        return Prepared(entry.environment, entry.environment.python, variables, entry.delta, entry.stamp)

    def forget(self, spec: EnvSpec) -> None:
        self._entries.pop(spec, None)
