"""Run states, defined once (stdlib only: listings read them without importing pydantic).

``envflow.models`` re-exports them; ``protocol.py`` renders them into every Lua script, with
the one-letter codes the compact transition history stores (``run_hash.py``).
"""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    """Where a run is in its life. ``SCHEDULED -> PENDING -> RUNNING -> <final>``."""

    SCHEDULED = "SCHEDULED"  # waiting for its time (a retry delay, a future slot)
    PENDING = "PENDING"  # on the queue, waiting for a worker
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # the flow raised, or could not be started (bad env, missing file)
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"  # its worker died or lost Redis for longer than the lease
    TIMED_OUT = "TIMED_OUT"  # it ran longer than its timeout and was stopped

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED, RunState.CRASHED, RunState.TIMED_OUT}
)

# One letter per state, as the run record's transition history stores it.
CODES = {
    RunState.SCHEDULED: "S",
    RunState.PENDING: "P",
    RunState.RUNNING: "R",
    RunState.COMPLETED: "C",
    RunState.FAILED: "F",
    RunState.CANCELLED: "X",
    RunState.CRASHED: "K",
    RunState.TIMED_OUT: "T",
}
BY_CODE = {code: state for state, code in CODES.items()}
