"""The run record's hash (``envflow:run:<id>``): its fields and how each is encoded. Stdlib only.

This module is the one reader of run hash fields (``record`` and listings both go
through it); ``runs.py`` writes a new run's fields and the Lua scripts change them, through
the helpers of ``lua/_lib.lua`` (``transition``, ``add_attempt``), which write the encodings read here.

Every value is kept short, so that a typical run's hash stays within Redis's compact listpack
encoding (values of at most 64 bytes, ``hash-max-listpack-value``); one longer value (a long
error, large parameters) makes that hash a hashtable, about 1 KB more. So:

- ``transitions`` is ``<code><µs>/<attempt>`` entries joined by ``,``: the state's letter
  (``states.CODES``), microseconds since ``created_at``, the attempt number
  (``P0/0,R2982/1,C19679/1``);
- ``attempts`` is a JSON array with one array per ended attempt,
  ``[n, worker, started µs, ended µs, code, exit_code, error_type, error, reason, start]`` (times
  since ``created_at``; trailing nulls left out);
- ``spec`` is ``{"ref": <digest>}``: the deployment snapshot is stored once per version
  (``envflow:spec:<digest>``); fields given beside ``ref`` override the snapshot's;
- ``hooks_on`` is ``|EVENT|EVENT|``, the events the deployment's hooks fire on (the transition scripts
  read it to write an outbox event, ``lua/_hooks.lua``); ``started_by`` is ``<run id>:<event>`` of the run
  whose hook started this one; ``late_at`` is when the run was found LATE;
- ``tags`` (a JSON array, when the deployment has tags) and ``on_limit`` (``cancel``, when so) are what
  its limits' scripts need (``lua/_limits.lua``); a run parked by a full limit has ``parked_on`` (that
  limit's name), both removed when it is woken;
- empty values and defaults (``attempt`` 0, ``retries`` 0, ``parameters`` ``{}``) are not stored,
  and neither is what the key or other fields already say (the id; ``updated_at``, the last
  transition's time; ``flow_name``, the start of ``deployment``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ..states import BY_CODE, RunState
from ..waits import Waiting

if TYPE_CHECKING:
    from ..models import RunRecord

# What a listing row needs (``queries.RunSummary``): read with one HMGET per run.
SUMMARY_FIELDS = ("deployment", "state", "attempt", "created_at", "worker", "attempt_started_at", "transitions",
                  "updated_at", "queue", "route", "late_at", "waiting")
# Scalar fields RunRecord takes as they are stored (pydantic converts the text).
SCALARS = ("deployment", "flow_name", "queue", "state", "created_at", "attempt", "worker", "exit_code",
           "result_error", "error_type", "error", "reason", "cancel_requested_at", "timeout", "retries",
           "scheduled_for", "schedule", "route", "started_by", "late_at")
ATTEMPT_FIELDS = ("n", "worker", "started_at", "ended_at", "state", "exit_code", "error_type", "error", "reason",
                  "start")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def texts(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, str]:
    """A hash as Redis returns it, as text."""
    return {_text(k): _text(v) for k, v in raw.items()}


def _at(created: float, micros: int | None) -> float | None:
    return None if micros is None else round(created + micros / 1e6, 6)


def transitions(value: str, created: float) -> list[tuple[str, float, int]]:
    """``[(state, time, attempt), ...]`` from a stored transition history."""
    if not value:
        return []
    out = []
    for item in value.split(","):
        offset, _, attempt = item[1:].partition("/")
        out.append((BY_CODE[item[0]].value, round(created + int(offset) / 1e6, 6), int(attempt)))
    return out


def attempts(value: str, created: float) -> list[dict[str, Any]]:
    """The ended attempts, as ``models.Attempt`` takes them."""
    if not value:
        return []
    out = []
    for item in json.loads(value):
        entry = dict(zip(ATTEMPT_FIELDS, item))
        entry["started_at"] = _at(created, entry.get("started_at"))
        entry["ended_at"] = _at(created, entry.get("ended_at"))
        entry["state"] = BY_CODE[entry["state"]].value
        out.append(entry)
    return out


def decode(raw: dict[bytes, bytes] | dict[str, str], run_id: str) -> dict[str, Any]:
    """The fields of ``models.RunRecord`` from a run's hash.

    :param run_id: the run's id (the hash does not hold it).
    """
    h = texts(raw)
    data: dict[str, Any] = {k: h[k] for k in SCALARS if h.get(k, "") != ""}
    data["id"] = run_id
    data.setdefault("flow_name", flow_of(h.get("deployment", "")))
    created = float(h["created_at"])
    data["transitions"] = transitions(h.get("transitions", ""), created)
    data["attempts"] = attempts(h.get("attempts", ""), created)
    data["updated_at"] = data["transitions"][-1][1] if data["transitions"] else None
    if h.get("parameters"):
        data["parameters"] = json.loads(h["parameters"])
    if h.get("waiting") and data.get("state") == "PENDING":  # why it waits (waits.py); cleared at a claim
        data["waiting"] = Waiting.from_json(h["waiting"])
    if h.get("result"):
        data["result"] = json.loads(h["result"])
        data["has_result"] = True
    return data


def record(raw: dict[bytes, bytes] | dict[str, str], run_id: str) -> RunRecord:
    """The run's record from its hash.

    :param run_id: the run's id, which the hash itself need not hold.
    """
    from ..models import RunRecord

    return RunRecord.model_validate(decode(raw, run_id))


def summary(run_id: str, values: list[bytes | None]) -> dict[str, Any] | None:
    """A listing row from the ``SUMMARY_FIELDS`` of a run, or None when its record is gone."""
    h = {name: _text(v) for name, v in zip(SUMMARY_FIELDS, values) if v is not None}
    if "state" not in h or "created_at" not in h:
        return None
    created = float(h["created_at"])
    history = transitions(h.get("transitions", ""), created)
    return {
        "id": run_id,
        "deployment": h.get("deployment", ""),
        "state": RunState(h["state"]),
        "attempt": int(h.get("attempt") or 0),
        "created_at": created,
        "updated_at": history[-1][1] if history else float(h.get("updated_at") or created),
        "worker": h.get("worker") or None,
        "started_at": float(h["attempt_started_at"]) if h.get("attempt_started_at") else None,
        "queue": h.get("queue", ""),
        "route": h.get("route") or None,
        "late": bool(h.get("late_at")),
        "waiting": Waiting.from_json(h.get("waiting")) if h["state"] == "PENDING" else None,
    }



def flow_of(deployment: str) -> str:
    """The flow of a deployment named ``<flow>/<name>``."""
    return deployment.partition("/")[0]


def spec_digest(spec_json: str) -> str:
    """The digest a deployment snapshot is stored under: 128 bits of its sha256, in hex."""
    return hashlib.sha256(spec_json.encode()).hexdigest()[:32]


def spec_field(digest: str) -> str:
    return json.dumps({"ref": digest}, separators=(",", ":"))


def snapshot_ref(field: str) -> str | None:
    """The digest of the deployment snapshot a run's ``spec`` field refers to (None: stored inline)."""
    try:
        ref = json.loads(field).get("ref")
    except (ValueError, AttributeError):
        return None
    return ref if isinstance(ref, str) else None


def spec_json(field: str, snapshot: str | None) -> str | None:
    """The deployment a run was created with, as JSON: its ``spec`` field (a reference, with any
    fields given beside it) resolved against the stored snapshot; None when that snapshot is gone."""
    inline = json.loads(field)
    if "ref" not in inline or snapshot is None:
        return None
    merged = json.loads(snapshot)
    merged.update({k: v for k, v in inline.items() if k != "ref"})
    return json.dumps(merged)
