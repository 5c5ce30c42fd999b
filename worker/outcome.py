"""How an attempt ended (:class:`Outcome`, from the executor) and what that makes of the run (:func:`ending`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from envflow.models import Attempt, RunState
from envflow.store.protocol import Ending

RETRIED = (RunState.FAILED, RunState.TIMED_OUT)  # crashes are retried by the reaper, through RQ


@dataclass
class Outcome:
    """How an attempt ended."""

    state: RunState
    exit_code: int | None = None
    result: str | None = None  # JSON text of the flow's return value
    result_error: str | None = None
    error_type: str | None = None
    error: str | None = None
    reason: str | None = None
    start: str | None = None  # how the flow process started (launcher.FlowProcess.how)
    lost: bool = False  # the run was taken away from this attempt; record nothing
    env_gone: bool = False  # the env this worker advertised is gone: give the run back to wait for another


def ending(outcome: Outcome, n: int, worker: str, started_at: float, retry_in: float | None) -> Ending:
    """The attempt's record and the run's next state.

    :param retry_in: seconds until the retry when the run has retries left (0: now), else None.
    """
    now = time.time()
    retrying = outcome.state in RETRIED and retry_in is not None
    next_state = outcome.state if not retrying else (RunState.SCHEDULED if retry_in else RunState.PENDING)
    attempt = Attempt(n=n, worker=worker, started_at=started_at, ended_at=round(now, 6), state=outcome.state.value,
                      exit_code=outcome.exit_code, error_type=outcome.error_type, error=outcome.error,
                      reason=outcome.reason, start=outcome.start)
    return Ending(attempt, next_state, outcome.result, outcome.result_error,
                  now + retry_in if retrying and retry_in else None)
