"""Driving runs through the run protocol directly, as a worker would, without a worker process."""

from __future__ import annotations

import time

from envflow.client import Client
from envflow.models import Attempt, DeploymentRecord, RunState
from envflow.output.writer import OutputWriter
from envflow.store.protocol import Claimed, Ending


def record(name: str = "flow/dep", queue: str = "default") -> DeploymentRecord:
    flow, _, deployment = name.partition("/")
    return DeploymentRecord(name=name, deployment=deployment, flow_name=flow, flow_path="/nowhere/flows.py",
                            flow_storage="path", queue=queue, created_at=1.0, updated_at=1.0)


def register(client: Client, name: str = "flow/dep") -> DeploymentRecord:
    return client.create_deployment(record(name))


def claim(client: Client, run_id: str, worker: str = "w1") -> Claimed:
    claimed = client.store.scripts.claim(run_id, worker, client.store.get(run_id).queue).run()
    assert isinstance(claimed, Claimed), claimed
    return claimed


def drive(client: Client, run_id: str, lines: list[str] | None = None, state: RunState = RunState.COMPLETED,
          worker: str = "w1") -> None:
    """Claim the run, write its output, end its attempt in ``state`` (final)."""
    claimed = claim(client, run_id, worker)
    writer = OutputWriter(client.store.scripts, run_id, claimed.attempt)
    for line in lines if lines is not None else ["hello world"]:
        writer.feed("o", line.encode() + b"\n")
        writer.flush(force=True)
    attempt = Attempt(n=claimed.attempt, worker=worker, started_at=claimed.started_at, ended_at=round(time.time(), 6),
                      state=state.value, exit_code=0 if state is RunState.COMPLETED else 1,
                      error_type=None if state is RunState.COMPLETED else "ValueError",
                      error=None if state is RunState.COMPLETED else "boom", start="new")
    ending = Ending(attempt, state, result="null" if state is RunState.COMPLETED else None)
    assert client.store.scripts.finish(run_id, ending).run()
