"""Deployments: a flow, the environment its runs use, and how they run.

``Deployment`` is envflow's API. ``DeploymentSpec`` (with a ``flow_runner=``) is a thin
alias for files written for the workflow tool whose docs envflow follows; it builds the
same ``Deployment``.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import flows
from .errors import ConfigError, ParameterError
from .flows import is_flow
from .hook_spec import Hook
from .models import EnvKind, EnvSpec
from .parameters import ensure_json
from .schedules import Cron, Interval

# Retries a deployment may ask for: far above any real need, far below a typo's 1e20.
MAX_RETRIES = 1000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_text(value: str, what: str) -> str:
    """``value``, if a process can take it as a path, an argument or an environment variable.

    :raises ValueError: it holds a NUL byte, or a lone surrogate (not valid text, not UTF-8).
    """
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte, which no path, argument or environment variable can hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} holds a lone surrogate (such as \\ud800), which is not valid text") from None
    return value


class DeploymentFields(BaseModel):
    """The validated fields of a deployment (the same for Python and YAML files)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    flow: Any = None
    flow_location: str | None = None
    flow_name: str | None = None
    flow_storage: Literal["source", "path"] = "source"
    condaenv: str | None = None
    virtualenv: str | None = None
    requirements: list[str] | None = None
    requirements_file: str | None = None
    python: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    queue: str | None = None
    stream_output: bool = True
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    retry_delay: float | list[float] = 0
    concurrency_limit: int | None = Field(None, ge=1)
    on_limit: Literal["wait", "cancel"] = "wait"
    schedule: Cron | Interval | list[Cron | Interval] | None = None
    missed_runs: Literal["skip", "run_once", "catch_up"] = "run_once"
    catch_up_limit: int = Field(10, ge=1)
    description: str | None = None
    preload: list[str] = Field(default_factory=list)
    warm: bool = False
    hooks: list[Hook] = Field(default_factory=list)
    late_after: float | None = Field(None, gt=0)

    @field_validator("hooks")
    @classmethod
    def _check_hooks(cls, value: list[Hook]) -> list[Hook]:
        if any(h.tags for h in value):
            raise ValueError("tags: only site-wide hooks (`envflow hook add --tag`) pick deployments by tag")
        return value

    @field_validator("preload")
    @classmethod
    def _check_preload(cls, value: list[str]) -> list[str]:
        for name in value:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"preload: {name!r} is not a module name (like 'pandas' or 'sklearn.ensemble')")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"invalid deployment name {value!r}: use letters, digits, '-', '_' and '.'")
        return value

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError(f"invalid queue name {value!r}: use letters, digits, '-', '_' and '.'")
        return value

    @field_validator("flow_location", "flow_name", "condaenv", "virtualenv", "description", "requirements_file",
                     "python")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        return value if value is None else check_text(value, "the value")

    @field_validator("requirements")
    @classmethod
    def _check_requirements(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from .requirements import normalize_all

        for item in value:
            check_text(item, f"requirement {item!r}")
        return list(normalize_all(value))

    @field_validator("python")
    @classmethod
    def _check_python(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("name the base interpreter: a conda env name, a path or a version such as '3.12'")
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            check_text(tag, f"tag {tag!r}")
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _ENV_NAME_RE.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            check_text(text, f"the value of {key}")
        return value

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, item in value.items():
            try:
                ensure_json(item, f"parameter {name!r}")
            except ParameterError as e:
                raise ValueError(str(e)) from None
        return value

    @field_validator("retry_delay")
    @classmethod
    def _check_delay(cls, value: float | list[float]) -> float | list[float]:
        for v in value if isinstance(value, list) else [value]:
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"give a finite number of seconds, not negative; got {v}")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> DeploymentFields:
        if self.condaenv and self.virtualenv:
            raise ValueError("give condaenv or virtualenv, not both (virtualenv is for venv and virtualenv directories)")
        built = [n for n in ("requirements", "requirements_file", "python") if getattr(self, n) is not None]
        existing = [n for n in ("condaenv", "virtualenv") if getattr(self, n)]
        if built and existing:
            raise ValueError(f"give {' and '.join(built)} (an env the workers build) or {existing[0]} (an env that "
                             "exists), not both")
        if self.flow is None and not self.flow_location:
            raise ValueError("give the flow (flow=my_flow) or the file it is in (flow_location='flows.py')")
        if self.flow is not None and not is_flow(self.flow):
            raise ValueError(f"flow must be a function decorated with @flow, got {self.flow!r}")
        return self

    def env_spec(self, requirements_digest: str | None = None) -> EnvSpec:
        """The env spec; ``requirements_digest`` is the sha256 of ``requirements_file``'s content, once read."""
        if self.requirements is None and self.requirements_file is None and self.python is None:
            return EnvSpec.from_fields(condaenv=self.condaenv, virtualenv=self.virtualenv)
        return EnvSpec(kind=EnvKind.REQUIREMENTS, requirements=tuple(self.requirements or ()),
                       requirements_digest=requirements_digest, python=self.python)

    @property
    def schedules(self) -> list[Cron | Interval]:
        if self.schedule is None:
            return []
        return list(self.schedule) if isinstance(self.schedule, list) else [self.schedule]


def format_validation_error(error: ValidationError, where: str) -> str:
    """One line per invalid field: ``where: field: message``."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "deployment"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {field}: {message}")
    return "\n".join(lines)


class _Collector:
    """Deployments (and their errors) created while envflow loads a deployment file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.deployments: list[Deployment] = []
        self.errors: list[str] = []


_collectors: list[_Collector] = []


def _definition_line(path: Path | None) -> str:
    """``file:line`` of the statement that created a deployment."""
    frame = sys._getframe(2)
    fallback = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if path is not None and Path(filename) == path:
            return f"{filename}:{frame.f_lineno}"
        if fallback is None and not filename.startswith(str(Path(__file__).parent)):
            fallback = f"{filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return fallback or "<unknown>"


class Deployment:
    """A flow and how its runs execute.

    :param name: the deployment's name; runs address it as ``flow-name/name``.
    :param flow: the ``@flow`` function (or give ``flow_location``, and ``flow_name`` when the file has several).
    :param flow_storage: ``"source"`` (default) stores the flow file's source in Redis so any worker can run it;
        ``"path"`` makes workers open ``flow_location`` themselves (for flows importing a mounted project).
    :param condaenv: a named conda env, or a conda prefix path (starting with ``/``, ``~`` or ``.``).
    :param virtualenv: a venv or virtualenv directory. Relative paths resolve against the worker's directory.
    :param requirements: PEP 508 requirements of a venv the workers build (with uv) once per host and reuse.
    :param requirements_file: a requirements file (relative to the deployment file), stored with the deployment.
    :param python: the built venv's base interpreter: a conda env name, a path, or a version ("3.12") found on
        the worker (default: the worker's own Python).
    :param env: variables set for the flow, after the environment's activation.
    :param parameters: default parameters, overridable per run.
    :param stream_output: echo the flow's lines in the worker's log too (the caller's stream is always kept).
    :param queue: the queue its runs go to (``envflow worker start --queue NAME`` serves it).
    :param timeout: seconds after which a run is stopped (state TIMED_OUT).
    :param retries: how many times a failed, crashed or timed-out run is run again.
    :param retry_delay: seconds before each retry: one number for all, or a list (retry 1, retry 2, ...;
        the last one repeats).
    :param concurrency_limit: at most this many of its runs are RUNNING at once, across all workers; the
        others wait (PENDING) for a slot. Tags with a limit (``envflow limit set TAG N``) limit it too.
    :param on_limit: ``"wait"`` (default) or ``"cancel"``: a run that finds one of its limits full ends
        CANCELLED at once instead of waiting (for schedules: no new run while the last one runs).
    :param schedule: a ``Cron``, an ``Interval``, or a list of them.
    :param missed_runs: after scheduler downtime: ``"skip"``, ``"run_once"`` (default) or ``"catch_up"``.
    :param preload: modules imported ahead, in the env, by the worker's ready process for this deployment's
        runs (``["pandas", "sklearn.ensemble"]``): a run starts with them imported.
    :param warm: keep a ready process for this deployment's runs from worker start, not only after a run.
    :param hooks: what to do when a run ends or is late: ``[{"on": ["FAILED"], "webhook": URL}, {"on":
        ["COMPLETED"], "run": "flow/deployment", "parameters": {...}}]`` (docs/hooks.md).
    :param late_after: seconds after it was due (or submitted) that a run not yet started fires ``LATE`` hooks.
    """

    def __init__(self, **fields: Any) -> None:
        collector = _collectors[-1] if _collectors else None
        self.defined_at = _definition_line(collector.path if collector else None)
        self.fields: DeploymentFields | None = None
        if collector is None and flows._loading:
            return  # the file is being imported to run its flow: deployments in it are inert
        try:
            self.fields = DeploymentFields(**fields)
        except ValidationError as e:
            label = f"{self.defined_at}: deployment {fields.get('name', '?')!r}"
            message = format_validation_error(e, label)
            if collector is None:
                raise ConfigError(message) from None
            self.fields = None
            collector.errors.append(message)
            return
        if collector is not None:
            collector.deployments.append(self)

    @property
    def name(self) -> str:
        assert self.fields is not None
        return self.fields.name

    def __repr__(self) -> str:
        return f"Deployment(name={self.fields.name if self.fields else '?'!r}, defined at {self.defined_at})"


def DeploymentSpec(*, flow_runner: Any = None, **fields: Any) -> Deployment:  # noqa: N802 - alias keeps its name
    """Alias of :class:`Deployment` taking the reference tool's ``flow_runner=`` argument.

    ``DeploymentSpec(name=..., flow=..., flow_runner=SubprocessFlowRunner(condaenv=...))`` is
    ``Deployment(name=..., flow=..., condaenv=...)``.
    """
    if flow_runner is not None:
        fields = {**flow_runner.deployment_fields(), **fields}
    return Deployment(**fields)


__all__ = ["Deployment", "DeploymentSpec", "DeploymentFields"]
