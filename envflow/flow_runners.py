"""``SubprocessFlowRunner``: the reference tool's flow runner, as an alias of Deployment's env fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .hook_spec import Hook


class SubprocessFlowRunner(BaseModel):
    """Where and how a deployment's runs execute; pass it to ``DeploymentSpec(flow_runner=...)``.

    Every field maps onto the :class:`~envflow.deployments.Deployment` field of the same name.
    """

    model_config = ConfigDict(extra="forbid")

    condaenv: str | None = None
    virtualenv: str | None = None
    requirements: list[str] | None = None  # a venv the workers build (see Deployment)
    requirements_file: str | None = None  # relative to the deployment file
    python: str | None = None  # the built venv's base interpreter
    stream_output: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    preload: list[str] = Field(default_factory=list)
    warm: bool = False
    hooks: list[Hook] = Field(default_factory=list)  # see Deployment
    late_after: float | None = Field(None, gt=0)
    concurrency_limit: int | None = Field(None, ge=1)  # at most this many runs at once (see Deployment)
    on_limit: Literal["wait", "cancel"] = "wait"

    def deployment_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


__all__ = ["SubprocessFlowRunner"]
