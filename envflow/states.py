"""Run states, defined once (stdlib only: listings read them without importing pydantic).

``envflow.models`` re-exports them; ``protocol.py`` renders them into every Lua script, with
the one-letter codes the compact transition history stores (``run_hash.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Look:
    """How a state is shown: ``terminal`` is click's colour name, ``colour`` the web UI's badge and
    strip bar (white text on it keeps a contrast of at least 4.5:1). States are named in text too."""

    terminal: str
    colour: str


LOOKS = {
    RunState.SCHEDULED: Look("blue", "#4f5fb8"),
    RunState.PENDING: Look("yellow", "#8a6d00"),
    RunState.RUNNING: Look("cyan", "#1565a8"),
    RunState.COMPLETED: Look("green", "#1f7a3d"),
    RunState.FAILED: Look("red", "#b42330"),
    RunState.CANCELLED: Look("magenta", "#6d3fb0"),
    RunState.CRASHED: Look("red", "#7f1d2c"),
    RunState.TIMED_OUT: Look("red", "#a05a00"),
}
if set(CODES) != set(RunState) or set(LOOKS) != set(RunState):  # a new state needs both, or nothing starts
    raise RuntimeError("every RunState needs its letter in CODES and its look in LOOKS")
