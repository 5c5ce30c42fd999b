"""``SubprocessFlowRunner``: the reference tool's flow runner, as an alias of Deployment's env fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SubprocessFlowRunner(BaseModel):
    """Where and how a deployment's runs execute; pass it to ``DeploymentSpec(flow_runner=...)``.

    Every field maps onto the :class:`~envflow.deployments.Deployment` field of the same name.
    """

    model_config = ConfigDict(extra="forbid")

    condaenv: str | None = None
    virtualenv: str | None = None
    stream_output: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    preload: list[str] = Field(default_factory=list)
    warm: bool = False

    def deployment_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


__all__ = ["SubprocessFlowRunner"]
