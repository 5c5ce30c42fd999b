"""The runs the UI lists, read in one place: the Runs page, a deployment's runs and its strip.

Runs come from ``Client.runs`` (newest first, by deployment and state). Each row also shows
the environment the run was made for, read from the deployment snapshot in its record, so a
deployment changed since shows each run's own env.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..client import Client
from ..models import RunRecord, RunState

MAX_LIMIT = 500


@dataclass(frozen=True)
class RunRow:
    record: RunRecord
    env: str


def recent_runs(client: Client, deployment: str | None = None, state: str | None = None,
                limit: int = 50) -> list[RunRow]:
    """The newest runs, optionally of one deployment and in one state, with their envs.

    :raises DeploymentNotFound: ``deployment`` is not registered.
    :raises ValueError: ``state`` is not a run state.
    """
    records = recent_records(client, deployment, state, limit)
    return [RunRow(r, env) for r, env in zip(records, run_envs(client, [r.id for r in records]))]


def recent_records(client: Client, deployment: str | None = None, state: str | None = None,
                   limit: int = 50) -> list[RunRecord]:
    """The newest run records (no envs), as :func:`recent_runs` selects them."""
    if deployment:
        client.get_deployment(deployment)
    return client.runs(deployment or None, RunState(state) if state else None, max(1, min(limit, MAX_LIMIT)))


def run_envs(client: Client, run_ids: list[str]) -> list[str]:
    """Each run's environment, as its deployment snapshot names it (one pipelined round trip)."""
    if not run_ids:
        return []
    envs = []
    for spec in client.store.deployments_of(run_ids):
        envs.append(str(spec.env) if spec is not None else "-")
    return envs
