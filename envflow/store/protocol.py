"""The run protocol: every change of a run's state is one Lua script in ``envflow/store/lua/``, and this
module is the only place that knows each script's keys, arguments and reply.

Each method of :class:`RunScripts` returns a :class:`Call`: run it now (``.run()``), or queue it
in a pipeline with other commands (``.queue(pipe)``) and decode its reply from the pipeline's
results (``.result(raw)``). The state names and the set of final states are Python's
(``RunState``, ``FINAL_STATES``), rendered into every script when it loads. Which script makes
which transition is tabled in docs/architecture.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib.resources import files
from typing import Any, Generic, TypeVar

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from ..models import FINAL_STATES, Attempt, DeploymentRecord, RunRecord, RunState
from ..settings import Settings
from ..states import CODES
from ..waits import Waiting
from . import keys, run_hash
from .packing import PACK_MAX_BYTES, PACK_MAX_ENTRIES

T = TypeVar("T")
SCRIPT_NAMES = ("claim", "heartbeat", "append", "finish", "crash", "cancel", "unrunnable", "late", "wait", "release",
                "limit")
OUTBOX_MAX = 100_000  # hook events kept at most (about): delivered ones are deleted as they go


def now_text(ts: float | None = None) -> str:
    """A timestamp as the decimal text the scripts store."""
    return repr(round(time.time() if ts is None else ts, 6))


def _constants() -> str:
    states = ", ".join(f"{s.value} = '{s.value}'" for s in RunState)
    final = ", ".join(f"{s.value} = true" for s in RunState if s in FINAL_STATES)
    codes = ", ".join(f"{s.value} = '{c}'" for s, c in CODES.items())
    return "\n".join([
        f"local S = {{{states}}}",
        f"local FINAL = {{{final}}}",
        f"local CODE = {{{codes}}}",
        f"local IDX = '{keys.STATE_INDEX_PREFIX}'",
        f"local SPEC = '{keys.spec('')}'",
        f"local PACK_MAX_BYTES, PACK_MAX_ENTRIES = {PACK_MAX_BYTES}, {PACK_MAX_ENTRIES}",
        f"local OUTBOX, SITE_HOOKS, OUTBOX_MAX = '{keys.HOOK_OUTBOX}', '{keys.SITE_HOOKS}', {OUTBOX_MAX}",
        f"local LIMITS, LIMIT, DEP_LIMIT = '{keys.LIMITS}', '{keys.LIMIT_PREFIX}', '{keys.DEPLOYMENT_LIMIT_PREFIX}'",
        f"local RUN, PENDING = '{keys.run('')}', '{keys.PENDING_RUNS}'",
        f"local RQ_JOB, RQ_QUEUE, RQ_QUEUED = '{keys.RQ_JOB_PREFIX}', '{keys.RQ_QUEUE_PREFIX}', '{keys.RQ_QUEUED}'",
        "",
    ])


@cache
def _source(name: str) -> str:
    folder = files("envflow.store").joinpath("lua")
    parts = [folder.joinpath(f"{part}.lua").read_text() for part in ("_lib", "_output", "_hooks", "_limits", name)]
    return "\n".join([_constants(), *parts])


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Call(Generic[T]):
    """One script invocation with its keys and arguments, and how to read its reply."""

    __slots__ = ("script", "keys", "args", "decode")

    def __init__(self, script: Script, keys_: list[str], args: list[Any], decode: Callable[[Any], T]) -> None:
        self.script, self.keys, self.args, self.decode = script, keys_, args, decode

    def run(self, client: Redis | None = None) -> T:
        return self.decode(self.script(keys=self.keys, args=self.args, client=client))

    def queue(self, pipe: Pipeline) -> None:
        # A plain EVALSHA: redis-py would otherwise ask whether the script exists before every execute.
        pipe.evalsha(self.script.sha, len(self.keys), *self.keys, *self.args)  # type: ignore[attr-defined]  # not in the stubs

    def result(self, raw: Any) -> T:
        """The decoded reply from a pipeline's results; run again alone when a restarted Redis forgot the script."""
        if isinstance(raw, NoScriptError):
            return self.run()
        if isinstance(raw, Exception):
            raise raw
        return self.decode(raw)


@dataclass(frozen=True)
class Claimed:
    """A run claimed for a new attempt on this worker."""

    attempt: int
    run: RunRecord
    deployment: DeploymentRecord  # the deployment as it was when the run was created
    started_at: float


@dataclass(frozen=True)
class NotClaimed:
    """Why a run's job cannot start here: ``missing``, ``ended`` (detail: its state), ``busy`` (detail:
    the worker holding it), ``paused`` (its queue) or ``limited`` (detail: why it waits; the run is
    parked until a slot of that limit frees, and its job must not go back to the queue)."""

    status: str
    detail: str = ""


class Beat(IntEnum):
    """A heartbeat's answer."""

    LOST = -1  # the attempt is no longer this worker's: stop the flow, record nothing
    GO = 0
    CANCEL = 1  # a cancel was requested


@dataclass(frozen=True)
class CancelOutcome:
    """``missing``, ``ended`` (detail: its state), ``cancelled`` (it had not started) or ``requested``
    (detail: the worker that will stop it)."""

    status: str
    detail: str = ""


@dataclass(frozen=True)
class Ending:
    """How an attempt ended and where its run goes next."""

    attempt: Attempt  # the attempt's record; its state is how the attempt ended
    next_state: RunState  # that state, or PENDING / SCHEDULED when the run will be retried
    result: str | None = None  # JSON text of the flow's return value
    result_error: str | None = None
    scheduled_for: float | None = None  # when a delayed retry is due

    def run_fields(self) -> list[str]:
        a = self.attempt
        values = {
            "exit_code": "" if a.exit_code is None else str(a.exit_code),
            "result": self.result or "",
            "result_error": self.result_error or "",
            "error_type": a.error_type or "",
            "error": a.error or "",
            "reason": a.reason or "",
        }
        if self.scheduled_for is not None:
            values["scheduled_for"] = now_text(self.scheduled_for)
        return [item for pair in values.items() for item in pair]

    def attempt_fields(self) -> list[str]:
        """The attempt as ``finish.lua`` takes it: worker, started, ended, state, exit code, error type,
        error, reason, how its process started."""
        a = self.attempt
        return [a.worker, "" if a.started_at is None else now_text(a.started_at), now_text(a.ended_at), a.state,
                "" if a.exit_code is None else str(a.exit_code), a.error_type or "", a.error or "", a.reason or "",
                a.start or ""]


def _claim_reply(run_id: str) -> Callable[[list[Any]], Claimed | NotClaimed]:
    def decode(raw: list[Any]) -> Claimed | NotClaimed:
        status = _text(raw[0])
        if status == "limited":
            return NotClaimed(status, _text(raw[2]))
        if status != "ok":
            return NotClaimed(status, _text(raw[1]) if len(raw) > 1 else "")
        fields = {_text(raw[i]): _text(raw[i + 1]) for i in range(3, len(raw), 2)}
        spec = run_hash.spec_json(fields["spec"], _text(raw[2]) or None)
        if spec is None:  # claim.lua ends a run whose snapshot is gone; they read the reference alike
            raise ValueError(f"run {run_id}: claimed without its deployment snapshot")
        return Claimed(int(raw[1]), run_hash.record(fields, run_id), DeploymentRecord.model_validate_json(spec),
                       float(fields["attempt_started_at"]))

    return decode


class RunScripts:
    """The scripts of one Redis client, each behind a method that owns its keys, arguments and reply."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._scripts = {name: redis.register_script(_source(name)) for name in SCRIPT_NAMES}

    def _call(self, name: str, keys_: list[str], args: list[Any], decode: Callable[[Any], T]) -> Call[T]:
        return Call(self._scripts[name], keys_, args, decode)

    def _run_keys(self, run_id: str) -> list[str]:
        return [keys.run(run_id), keys.lease(run_id), keys.ACTIVE_RUNS, keys.PENDING_RUNS, keys.output(run_id)]

    def claim(self, run_id: str, worker: str, queue: str) -> Call[Claimed | NotClaimed]:
        """PENDING/SCHEDULED -> RUNNING for a new attempt held by ``worker`` (lease set, a slot of each of
        its limits taken); a RUNNING run whose lease lapsed ends that attempt CRASHED first; a cancel
        requested meanwhile ends it CANCELLED; a full limit parks it (PENDING) or, with ``on_limit``
        cancel, ends it CANCELLED."""
        s = self.settings
        args = [worker, now_text(), int(s.lease_ttl * 1000), s.history_ttl, s.run_ttl, queue]
        run_keys = [*self._run_keys(run_id), keys.PAUSED_QUEUES, keys.packed_output(run_id)]
        return self._call("claim", run_keys, args, _claim_reply(run_id))

    def heartbeat(self, run_id: str, attempt: int, worker: str) -> Call[Beat]:
        """Renew the attempt's lease; tell whether a cancel was requested or the attempt was lost."""
        args = [attempt, worker, int(self.settings.lease_ttl * 1000)]
        return self._call("heartbeat", [keys.run(run_id), keys.lease(run_id)], args, lambda r: Beat(int(r)))

    def append(self, run_id: str, attempt: int, entries: Sequence[str], accept_gap: bool = False) -> Call[int]:
        """Append output entries (groups of 5 from ``envflow.output.format``) to the history and publish
        them; the reply is the next expected line number, or -1 when the attempt is no longer ours.
        An entry beyond that number is written only with ``accept_gap``: the reply then says where the
        history's lines end, for the writer to send the missing ones again."""
        s = self.settings
        args = [attempt, s.history_max_lines, s.history_ttl, s.history_max_bytes, 1 if accept_gap else 0, *entries]
        return self._call("append", [keys.run(run_id), keys.output(run_id)], args, int)

    def finish(self, run_id: str, ending: Ending) -> Call[bool]:
        """RUNNING -> the ending's next state; False when the attempt was no longer ours."""
        a = ending.attempt
        args = [a.n, ending.next_state.value, now_text(a.ended_at), 1 if ending.next_state.is_final else 0,
                self.settings.history_ttl, self.settings.run_ttl, *ending.attempt_fields(), *ending.run_fields()]
        run_keys = [*self._run_keys(run_id), keys.packed_output(run_id)]
        return self._call("finish", run_keys, args, lambda r: bool(int(r)))

    def crash(self, run_id: str, attempt: int, will_retry: bool, reason: str) -> Call[RunState | None]:
        """RUNNING with no lease -> CRASHED, then PENDING when ``will_retry`` (CANCELLED when a cancel was
        requested); None when the attempt is not lost."""
        args = [attempt, now_text(), 1 if will_retry else 0, reason, self.settings.history_ttl, self.settings.run_ttl]
        run_keys = [*self._run_keys(run_id), keys.packed_output(run_id)]
        return self._call("crash", run_keys, args, lambda r: RunState(_text(r)) if r else None)

    def cancel(self, run_id: str, reason: str) -> Call[CancelOutcome]:
        """Record a cancel request; a run that has not started goes to CANCELLED at once."""
        args = [now_text(), reason, self.settings.history_ttl, self.settings.run_ttl]
        run_keys = [keys.run(run_id), keys.PENDING_RUNS, keys.output(run_id), keys.packed_output(run_id)]
        return self._call("cancel", run_keys, args,
                          lambda r: CancelOutcome(_text(r[0]), _text(r[1]) if len(r) > 1 else ""))

    def release(self, run_id: str, attempt: int, worker: str) -> Call[bool]:
        """RUNNING -> PENDING before the flow started: this worker found the env gone (``release.lua``)."""
        return self._call("release", self._run_keys(run_id), [worker, attempt, now_text()], lambda r: bool(int(r)))

    def note_waiting(self, run_ids: Sequence[str], waiting: Waiting | None) -> Call[int]:
        """Say why these runs wait, on those still PENDING whose reason changed (``waits.py``); None clears it."""
        text = waiting.to_json() if waiting is not None else ""
        return self._call("wait", [keys.run(r) for r in run_ids], [text, now_text()], int)

    def unrunnable(self, run_id: str, reason: str) -> Call[bool]:
        """PENDING/SCHEDULED -> FAILED: no live worker has the run's env, and it waited long enough."""
        args = [now_text(), reason, self.settings.history_ttl, self.settings.run_ttl]
        run_keys = [keys.run(run_id), keys.PENDING_RUNS, keys.output(run_id), keys.packed_output(run_id)]
        return self._call("unrunnable", run_keys, args, lambda r: bool(int(r)))

    def late(self, run_id: str) -> Call[bool]:
        """Fire a waiting run's LATE event, once: True when this call did (it had not started)."""
        return self._call("late", [keys.run(run_id), keys.LATE_RUNS], [now_text()], lambda r: bool(int(r)))
    def set_limit(self, name: str, slots: int | None) -> Call[bool]:
        """Set a concurrency limit to ``slots`` (None removes it), waking the runs in line it now admits;
        False when removing a limit that does not exist."""
        limit_keys = [keys.LIMITS, keys.limit_holders(name), keys.limit_waiting(name)]
        return self._call("limit", limit_keys, [name, "" if slots is None else slots], lambda r: bool(int(r)))
