"""The function every queued RQ job of a run names.

Every run is one RQ job with the run's id as job id, this function's path as its function, and the
run id as its only argument (JSON-serialised). The path is written into every queued job, so this
module keeps it; the job class, the serializer and the queues are the store's
(``envflow/store/jobs.py``). Only envflow's worker executes these jobs, and it executes nothing else:
it never imports the function a job names.
"""

from __future__ import annotations

from .errors import EnvflowError

RUN_FLOW = "envflow.jobs.run_flow"


def run_flow(run_id: str) -> None:
    """Placeholder so the job's function path is importable; never meant to be called."""
    raise EnvflowError(f"run {run_id} must be executed by `envflow worker start`, not by a plain RQ worker")
