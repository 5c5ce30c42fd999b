"""Data models shared by clients, workers and the scheduler: run states, env specs, records."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError

from .hook_spec import Hook
from .states import FINAL_STATES, RunState
from .waits import Waiting

__all__ = ["FINAL_STATES", "Attempt", "DeploymentRecord", "EnvKind", "EnvSpec", "RunRecord", "RunState",
           "ScheduleRecord", "readable_deployments"]

log = logging.getLogger("envflow")
# Stored deployments already reported unreadable by this process, so that listings say it once.
_reported: set[tuple[str, int]] = set()


class EnvKind(str, Enum):
    WORKER = "worker"  # the worker's own interpreter
    CONDA = "conda"  # a named conda env
    CONDA_PREFIX = "conda-prefix"  # a conda env given by its prefix path
    VENV = "venv"  # a venv or virtualenv directory
    REQUIREMENTS = "requirements"  # a venv each worker host builds from requirements, once, and caches


# The CLI's spec prefixes, and the deployment field each stands for.
SPEC_PREFIXES = {"venv": "virtualenv", "virtualenv": "virtualenv", "conda": "condaenv", "condaenv": "condaenv"}


class EnvSpec(BaseModel):
    """The environment a deployment's runs use, as the user wrote it.

    A built env (kind ``requirements``) carries everything a worker needs to build it: the
    normalized requirements, the digest of the requirements file stored with the deployment
    (``envflow:requirements:<sha256>``) and the base interpreter's spec.
    """

    model_config = ConfigDict(frozen=True)

    kind: EnvKind = EnvKind.WORKER
    value: str | None = None
    requirements: tuple[str, ...] = ()  # normalized PEP 508 requirements, sorted
    requirements_digest: str | None = None  # sha256 of the requirements file's content
    python: str | None = None  # base interpreter: a conda env name, a path or a version (None: the worker's)

    @classmethod
    def from_fields(
        cls,
        condaenv: str | None = None,
        virtualenv: str | None = None,
        *,
        requirements: list[str] | tuple[str, ...] | None = None,
        requirements_digest: str | None = None,
        python: str | None = None,
    ) -> EnvSpec:
        """Interpret the env fields of a deployment.

        A ``condaenv`` starting with ``/``, ``~`` or ``.`` is a prefix path, anything else a name.
        ``requirements``, a requirements file's digest or ``python`` ask for a built env.
        """
        if condaenv and virtualenv:
            raise ValueError("give condaenv or virtualenv, not both")
        if requirements or requirements_digest or python:
            if condaenv or virtualenv:
                raise ValueError(
                    "give requirements/requirements_file/python (an env the workers build) or condaenv/virtualenv "
                    "(an env that exists), not both"
                )
            from .requirements import normalize_all

            return cls(kind=EnvKind.REQUIREMENTS, requirements=normalize_all(tuple(requirements or ())),
                       requirements_digest=requirements_digest, python=python)
        if virtualenv:
            return cls(kind=EnvKind.VENV, value=virtualenv)
        if condaenv:
            kind = EnvKind.CONDA_PREFIX if condaenv.startswith(("/", "~", ".")) else EnvKind.CONDA
            return cls(kind=kind, value=condaenv)
        return cls()

    @classmethod
    def parse(cls, text: str) -> EnvSpec:
        """Parse the CLI form: ``venv:PATH``, ``conda:NAME``, ``conda:/prefix``, a bare path or ``worker``.

        A bare path is taken as a venv; ``env check`` looks at the directory to tell its real kind.
        """
        prefix, sep, value = text.partition(":")
        if sep and prefix in SPEC_PREFIXES:
            field = SPEC_PREFIXES[prefix]
            return cls.from_fields(condaenv=value) if field == "condaenv" else cls.from_fields(virtualenv=value)
        if text in ("", "worker"):
            return cls()
        if text.startswith(("/", "~", ".")):
            return cls(kind=EnvKind.VENV, value=text)
        return cls(kind=EnvKind.CONDA, value=text)

    def __str__(self) -> str:
        if self.kind is EnvKind.REQUIREMENTS:
            parts = [*self.requirements]
            if self.requirements_digest:
                parts.append(f"requirements file sha256:{self.requirements_digest[:12]}")
            base = f"python {self.python}" if self.python else "the worker's python"
            return f"requirements: {', '.join(parts) or 'none'} ({base})"
        return "worker environment" if self.kind is EnvKind.WORKER else f"{self.kind.value}:{self.value}"


class ScheduleRecord(BaseModel):
    """One schedule of a deployment, as stored (see envflow/schedules.py)."""

    kind: Literal["cron", "interval"]
    id: str
    cron: str | None = None
    timezone: str = "UTC"
    seconds: float | None = None
    anchor: float | None = None


class DeploymentRecord(BaseModel):
    """A registered deployment, as stored in Redis and snapshotted into each run."""

    name: str  # "<flow>/<deployment>"
    deployment: str
    flow_name: str
    flow_storage: Literal["source", "path"] = "source"
    source_digest: str | None = None  # set when flow_storage == "source"
    flow_path: str  # where the flow file was (source) or where workers open it (path)
    env: EnvSpec = Field(default_factory=EnvSpec)
    env_vars: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_spec: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    queue: str = "default"
    stream_output: bool = True
    preload: list[str] = Field(default_factory=list)  # modules a ready process imports ahead
    warm: bool = False  # ready from worker start
    timeout: FiniteFloat | None = None  # JSON has no nan or inf: stored, they would read back as null
    retries: int = 0
    retry_delay: list[FiniteFloat] = Field(default_factory=list)
    concurrency_limit: int | None = None  # at most this many of its runs RUNNING at once (its own limit)
    on_limit: Literal["wait", "cancel"] = "wait"  # what a run that finds one of its limits full does
    schedules: list[ScheduleRecord] = Field(default_factory=list)
    missed_runs: Literal["skip", "run_once", "catch_up"] = "run_once"
    catch_up_limit: int = 10
    hooks: list[Hook] = Field(default_factory=list)
    late_after: float | None = None  # seconds after it was due that a run not started is LATE
    description: str = ""
    defined_at: str = ""  # "file:line" of the definition
    created_at: float = 0.0
    updated_at: float = 0.0


def unreadable(name: str, error: ValidationError) -> str:
    """What to tell about a stored deployment that does not validate, in one line."""
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": str(error)}
    where = ".".join(str(p) for p in first["loc"]) or "record"
    return (f"deployment {name} is stored in a form envflow cannot read ({where}: {first['msg']}); "
            f"delete it (envflow deployment delete {name}) and create it again")


def readable_deployments(pairs: Iterable[tuple[str, bytes | str | None]]) -> list[DeploymentRecord]:
    """The stored deployments (``(name, raw JSON)`` pairs) that validate, in order; a missing one is
    left out and an unreadable one is skipped with a warning, so one bad record breaks no listing."""
    out = []
    for name, raw in pairs:
        if raw is None:
            continue
        try:
            out.append(DeploymentRecord.model_validate_json(raw))
        except ValidationError as e:
            if (name, hash(raw)) not in _reported:
                _reported.add((name, hash(raw)))
                log.warning("%s", unreadable(name, e))
    return out


class Attempt(BaseModel):
    """One execution of a run on a worker."""

    n: int
    worker: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    state: str
    exit_code: int | None = None
    error_type: str | None = None
    error: str | None = None
    reason: str | None = None
    start: str | None = None  # how its process started: "fork" (from a ready process), "spare", "new"


class RunRecord(BaseModel):
    """A run as stored in Redis (the ``envflow:run:<id>`` hash)."""

    id: str
    deployment: str
    flow_name: str
    queue: str
    state: RunState
    parameters: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    updated_at: float | None = None
    attempt: int = 0
    worker: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    transitions: list[tuple[str, float, int]] = Field(default_factory=list)
    exit_code: int | None = None
    result: Any = None
    has_result: bool = False
    result_error: str | None = None
    error_type: str | None = None
    error: str | None = None
    reason: str | None = None
    cancel_requested_at: float | None = None
    timeout: float | None = None
    retries: int = 0
    scheduled_for: float | None = None
    schedule: str | None = None
    route: str | None = None  # the env a worker must have to take it (envflow/store/routing.py)
    started_by: str | None = None  # "<run id>:<event>": the run whose hook started this one
    late_at: float | None = None  # when it was found LATE (not started late_after seconds after it was due)
    waiting: Waiting | None = None  # why a PENDING run waits, when nothing can take it (waits.py)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def entered(self, state: RunState) -> float | None:
        """When the run last entered ``state``."""
        for name, ts, _ in reversed(self.transitions):
            if name == state.value:
                return ts
        return None
