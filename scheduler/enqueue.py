"""Turning a deployment's due slots into runs, each slot exactly once.

One WATCH/MULTI transaction per deployment: WATCH its record, its cursors
(``envflow:schedule:<name>``), the paused set and the idempotency key of every slot
about to be enqueued; re-read them and decide (``scheduler/plan.py``); then, in MULTI,
create each run (record + RQ job, ``RunStore.create``), set each slot's key to the run's
id and move the cursors. Either all of it happens or none:

- two schedulers deciding the same slot: the second EXEC fails (WatchError) because the
  first changed the cursors and slot keys; the loser re-reads and finds nothing to do;
- a scheduler dying before EXEC leaves nothing behind (Redis drops a MULTI whose
  connection closes), so the slot is still due for whoever looks next;
- a slot whose key exists is never enqueued again, even if a cursor were lost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from redis import Redis
from redis.client import Pipeline

from envflow import waits
from envflow.errors import ParameterError
from envflow.models import DeploymentRecord
from envflow.parameters import merge_parameters
from envflow.schedules import slots_between
from envflow.store import keys
from envflow.store.deployments import answering
from envflow.store.runs import RunStore
from envflow.waits import Waiting

from .defaults import DEFAULT_GRACE
from .plan import MAX_SLOTS_PER_PASS, Decision, decide_deployment, stale_cursors

log = logging.getLogger("envflow.scheduler")

SLOT_TTL = 3 * 24 * 3600  # slot keys back up the cursors; a few days covers any restart


def slot_key(deployment: str, schedule_id: str, slot: float) -> str:
    """The idempotency key of one slot (its time in Unix milliseconds: intervals may be fractional)."""
    return keys.slot(deployment, schedule_id, round(slot * 1000))


def parse_cursors(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}


@dataclass
class Outcome:
    """What one transaction did: the runs it created as ``(schedule id, slot, run id)``."""

    deployment: str
    created: list[tuple[str, float, str]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


class SlotEnqueuer:
    """Commits due slots of one deployment at a time.

    :param grace: seconds a slot may be late and still count as on time (see ``plan.py``).
    """

    def __init__(self, store: RunStore, *, grace: float = DEFAULT_GRACE, slot_ttl: int = SLOT_TTL) -> None:
        self.store = store
        self.redis: Redis = store.redis
        self.grace = grace
        self.slot_ttl = slot_ttl

    def apply(self, name: str, now: float) -> Outcome:
        """Enqueue the deployment's slots due at ``now`` and move its cursors, atomically.

        :raises redis.WatchError: another scheduler changed the deployment's state first; call again.
        """
        outcome = Outcome(name)
        state_key = keys.schedule_state(name)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(keys.deployment(name), state_key, keys.PAUSED_DEPLOYMENTS)
            watched = answering(pipe)
            raw = watched.get(keys.deployment(name))
            cursors = parse_cursors(watched.hgetall(state_key))
            if raw is None:
                return outcome  # deleted meanwhile; delete_deployment drops its cursors
            record = DeploymentRecord.model_validate_json(raw)
            paused = bool(watched.sismember(keys.PAUSED_DEPLOYMENTS, name))
            decisions = decide_deployment(record, cursors, now, paused=paused, grace=self.grace)
            stale = stale_cursors(record, cursors)
            outcome.decisions = decisions
            if not stale and not any(d.writes for d in decisions):
                return outcome
            blocked = self._waiting_run(name)
            if blocked is not None and any(d.enqueue for d in decisions):
                self._skip(name, record, cursors, now, *blocked)
                return outcome
            slots = [(d.schedule.id, t) for d in decisions for t in d.enqueue]
            slots = self._untaken(pipe, name, slots)
            parameters = self._parameters(record) if slots else {}
            pipe.multi()
            if parameters is not None:
                for schedule_id, slot in slots:
                    run_id = self.store.create(record, parameters, scheduled_for=slot, schedule=schedule_id, pipeline=pipe)
                    pipe.set(slot_key(name, schedule_id, slot), run_id, ex=self.slot_ttl)
                    outcome.created.append((schedule_id, slot, run_id))
            moved: dict[str | bytes, str] = {d.schedule.id: repr(d.cursor) for d in decisions if d.cursor is not None}
            if moved:
                pipe.hset(state_key, mapping=moved)
            if stale:
                pipe.hdel(state_key, *stale)
            pipe.execute()
        return outcome

    def _waiting_run(self, name: str) -> tuple[str, str] | None:
        """A PENDING run of the deployment that waits because every live worker lacks its env: (id, why)."""
        for raw in self.redis.zrange(keys.state_index("PENDING", name), 0, 20):
            waiting = Waiting.from_json(self.redis.hget(keys.run(raw.decode()), waits.FIELD))
            if waiting is not None and waiting.kind == waits.ENV:
                return raw.decode(), waiting.message
        return None

    def _skip(self, name: str, record: DeploymentRecord, cursors: dict[str, float], now: float, run_id: str,
              why: str) -> None:
        """Make no run of the due slots while a run of the deployment waits for its env, and say so. The
        cursors stay: once the env appears, the slots left behind are missed ones, and ``missed_runs`` decides."""
        due = sorted(t for s in record.schedules if s.id in cursors
                     for t in slots_between(s, cursors[s.id], now, limit=MAX_SLOTS_PER_PASS))
        if not due:
            return
        note = {"count": len(due), "first": due[0], "last": due[-1], "run": run_id, "reason": why, "at": now}
        previous = self.redis.get(keys.skipped_slots(name))
        self.redis.set(keys.skipped_slots(name), json.dumps(note), ex=self.slot_ttl)
        if previous is None or json.loads(previous).get("count") != len(due):
            log.warning("%s: %d due slot(s) skipped: run %s already waits (%s)", name, len(due), run_id[:8], why)

    def _untaken(self, pipe: Pipeline, name: str, slots: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """The slots whose idempotency key does not exist yet (watched until EXEC)."""
        if not slots:
            return slots
        slot_keys = [slot_key(name, sid, t) for sid, t in slots]
        pipe.watch(*slot_keys)
        taken = answering(pipe).mget(slot_keys)
        for (sid, t), run_id in zip(slots, taken):
            if run_id is not None:
                log.warning("%s: slot %s of schedule %s already has run %s; not enqueued again",
                            name, t, sid, run_id.decode())
        return [s for s, run_id in zip(slots, taken) if run_id is None]

    @staticmethod
    def _parameters(record: DeploymentRecord) -> dict[str, object] | None:
        """The deployment's default parameters, or None (logged) when the flow cannot run with them."""
        try:
            return merge_parameters(record.parameter_spec, record.parameters, None, record.flow_name)
        except ParameterError as e:
            log.error("%s: scheduled slots skipped: %s. Scheduled runs use the deployment's parameters: "
                      "give it the missing ones", record.name, e)
            return None
