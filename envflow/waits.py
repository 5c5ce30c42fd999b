"""Why a run waits: one typed record on the run, written where the reason is known, read by every consumer.

A PENDING run that nothing can take says why in its hash's ``waiting`` field (JSON of :class:`Waiting`)
and on the channel ``<run hash>:waiting`` when that changes (``lua/wait.lua``), so followers (the CLI, the
UI, ``FlowRun.follow``) hear it at once and listings read it from the run. A claim clears it. The kinds
are generic: ``no-worker`` (no live worker serves the run's queue), ``env`` (every live worker of the
queue looked for the run's env and lacks it), ``queued`` (runs ahead, workers busy); others (a
concurrency limit's slot, say) use the same record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FIELD = "waiting"  # the run hash's field
NO_WORKER, ENV, QUEUED, LIMIT = "no-worker", "env", "queued", "limit"


def channel(run_key: str) -> str:
    """The pub/sub channel a run's waiting reason is announced on (``run_key``: its hash's key)."""
    return run_key + ":waiting"


@dataclass(frozen=True)
class Waiting:
    """Why a run waits: ``kind`` (machine-readable), ``message`` (one line for people), ``details``
    (kind-specific facts: queue, env, the workers' errors) and ``since`` (when this kind of wait began)."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    since: float | None = None

    def to_json(self) -> str:
        data = asdict(self)
        if data["since"] is None:
            del data["since"]
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> Waiting | None:
        """The record stored or announced, or None for nothing (or an unreadable value)."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
            details = data.get("details")
            return cls(str(data["kind"]), str(data["message"]), details if isinstance(details, dict) else {},
                       float(data["since"]) if data.get("since") is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
