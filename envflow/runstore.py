"""Run records in Redis: creating runs (record + RQ job in one transaction), reading and listing them.

A run is the hash ``envflow:run:<id>``; its state changes only through the Lua scripts in
``envflow/lua`` so that each transition is atomic and fenced by the attempt number.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError

from . import keys, routing
from .errors import RunNotFound
from .jobs import RUN_FLOW, SERIALIZER, Queues, RunJob
from .models import DeploymentRecord, RunRecord, RunState
from .protocol import RunScripts, now_text
from .reaper import Reaper
from .run_ids import MIN_PREFIX, is_run_id, is_run_id_prefix, new_run_id
from .settings import Settings

FINISHED_JOB_TTL = 60  # seconds a finished RQ job stays visible (dashboards); the run record stays longer


def retry_intervals(retries: int, delays: list[float]) -> list[int]:
    """RQ's interval list for "retry k waits delays[k-1], the last delay repeating".

    RQ picks ``intervals[len(intervals) - retries_left]``, so the list must have exactly
    ``retries`` entries for retry k to get entry k-1.
    """
    if not delays:
        return [0] * retries
    padded = [*delays, *[delays[-1]] * max(retries - len(delays), 0)][:retries]
    return [int(round(d)) for d in padded]


def _new_record(
    run_id: str,
    deployment: DeploymentRecord,
    parameters: dict[str, Any],
    now: float,
    state: RunState,
    timeout: float | None,
    scheduled_for: float | None,
    schedule: str | None,
) -> dict[str, Any]:
    """The fields of a new run's hash (the deployment snapshotted in ``spec``)."""
    fields: dict[str, Any] = {
        "id": run_id,
        "deployment": deployment.name,
        "flow_name": deployment.flow_name,
        "queue": deployment.queue,
        "state": state.value,
        "parameters": json.dumps(parameters),
        "created_at": now_text(now),
        "updated_at": now_text(now),
        "attempt": 0,
        "transitions": json.dumps([[state.value, round(now, 6), 0]]),
        "attempts": "[]",
        "retries": deployment.retries,
        "spec": deployment.model_dump_json(),
    }
    route = routing.route_key(deployment.env)
    if route is not None:
        fields["route"] = route
    if timeout is not None:
        fields["timeout"] = timeout
    if scheduled_for is not None:
        fields["scheduled_for"] = now_text(scheduled_for)
    if schedule is not None:
        fields["schedule"] = schedule
    return fields


class RunStore:
    """Reads and writes run records; shared by the client, the worker and the scheduler."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = RunScripts(redis, settings)
        self.queues = Queues(redis)
        self.reaper = Reaper(redis, settings, self.scripts, self.queues)

    def queue(self, name: str) -> Queue:
        """The RQ queue of that name."""
        return self.queues.get(name)

    def create(
        self,
        deployment: DeploymentRecord,
        parameters: dict[str, Any],
        *,
        timeout: float | None = None,
        scheduled_for: float | None = None,
        schedule: str | None = None,
        run_id: str | None = None,
        pipeline: Pipeline | None = None,
    ) -> str:
        """Record a new run and enqueue its job, atomically (one MULTI/EXEC unless ``pipeline`` is given).

        :param scheduled_for: a future time makes the run SCHEDULED, enqueued by RQ's scheduler then.
        """
        run_id = run_id or new_run_id()
        now = time.time()
        delayed = scheduled_for is not None and scheduled_for > now + 0.5
        fields = _new_record(run_id, deployment, parameters, now, RunState.SCHEDULED if delayed else RunState.PENDING,
                             timeout if timeout is not None else deployment.timeout, scheduled_for, schedule)
        pipe = pipeline if pipeline is not None else self.redis.pipeline(transaction=True)
        if not pipe.explicit_transaction:
            pipe.multi()  # RQ's enqueue expects a pipeline already in MULTI once commands are queued
        pipe.hset(keys.run(run_id), mapping=fields)
        pipe.zadd(keys.RUNS, {run_id: now})
        pipe.zadd(keys.deployment_runs(deployment.name), {run_id: now})
        # Waiting runs are indexed by when they became due, for the reaper's stuck-job check.
        pipe.zadd(keys.PENDING_RUNS, {run_id: scheduled_for if delayed and scheduled_for else now})
        queue = self.queue(routing.rq_queue(deployment.queue, fields.get("route")))
        job = self._job(queue, deployment, run_id)
        if delayed:
            assert scheduled_for is not None
            queue.schedule_job(job, datetime.fromtimestamp(scheduled_for, tz=timezone.utc), pipeline=pipe)
        else:
            queue.enqueue_job(job, pipeline=pipe)
        if pipeline is None:
            pipe.execute()
        return run_id

    def _job(self, queue: Queue, deployment: DeploymentRecord, run_id: str) -> RunJob:
        retry = None
        if deployment.retries:
            retry = Retry(max=deployment.retries, interval=retry_intervals(deployment.retries, deployment.retry_delay))
        return queue.create_job(  # type: ignore[return-value]
            RUN_FLOW,
            args=[run_id],
            job_id=run_id,
            timeout=-1,  # envflow enforces run timeouts itself, with the cancel kill path
            # Finished jobs expire instead of being deleted: RQ's delete costs several round
            # trips per job, an expiry none. The run record holds the result.
            result_ttl=FINISHED_JOB_TTL,
            failure_ttl=self.settings.run_ttl,
            description=f"{deployment.name} run {run_id}",
            retry=retry,
        )

    def get(self, run_id: str) -> RunRecord:
        raw = self.redis.hgetall(keys.run(run_id))
        if not raw:
            raise RunNotFound(f"no run {run_id}; list runs with `envflow run ls`")
        return self.explain([RunRecord.from_hash(raw)])[0]

    def resolve_id(self, text: str) -> str:
        """A full run id from an id or a unique prefix of at least 4 characters.

        :raises RunNotFound: ``text`` is not shaped like a run id (32 lowercase hex characters) or a
            prefix of one, or no single run matches it.
        """
        if not is_run_id_prefix(text):
            raise RunNotFound(f"no run {text!r}: a run id is 32 hex characters (0-9, a-f); give it or at least "
                              f"{MIN_PREFIX} of its first characters")
        if is_run_id(text) and self.redis.exists(keys.run(text)):
            return text
        matches = [m.decode() for m, _ in self.redis.zscan_iter(keys.RUNS, match=f"{text}*", count=1000)]
        matches = [m for m in matches if self.redis.exists(keys.run(m))]
        if not matches:
            raise RunNotFound(f"no run starts with {text!r}; list runs with `envflow run ls`")
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5])
            raise RunNotFound(f"{text!r} matches {len(matches)} runs ({shown}...); give more characters")
        return matches[0]

    def list(self, deployment: str | None = None, state: RunState | None = None, limit: int = 20) -> list[RunRecord]:
        """Newest runs first, optionally of one deployment and/or in one state."""
        index = keys.deployment_runs(deployment) if deployment else keys.RUNS
        found: list[RunRecord] = []
        start, page = 0, max(limit * 2, 50)
        while len(found) < limit:
            ids = [i.decode() for i in self.redis.zrevrange(index, start, start + page - 1)]
            if not ids:
                break
            with self.redis.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.hgetall(keys.run(run_id))
                hashes = pipe.execute()
            gone = [run_id for run_id, raw in zip(ids, hashes) if not raw]
            if gone:
                self.redis.zrem(index, *gone)  # records expired (run_ttl): drop them from the index
            for raw in hashes:
                if raw:
                    record = RunRecord.from_hash(raw)
                    if state is None or record.state is state:
                        found.append(record)
            start += page - len(gone)
        return self.explain(found[:limit])

    def explain(self, records: list[RunRecord]) -> list[RunRecord]:
        """Say why each waiting run waits, where no live worker of its queue has its env."""
        reasons: dict[tuple[str, str], str | None] = {}
        for record in records:
            if record.state is not RunState.PENDING or record.route is None:
                continue
            where = (record.queue, record.route)
            if where not in reasons:
                waiting = not routing.capable(self.redis, *where)
                reasons[where] = routing.waiting_reason(self.redis, *where) if waiting else None
            record.waiting = reasons[where]
        return records

    def state(self, run_id: str) -> RunState | None:
        """The run's state, or None when its record is gone."""
        raw = self.redis.hget(keys.run(run_id), "state")
        return None if raw is None else RunState(raw.decode())

    def reap_if_lost(self, run_id: str) -> RunState | None:
        """End the run's attempt if its worker died (see ``reaper.py``); the run's state after."""
        self.reaper.check_run(run_id)
        return self.state(run_id)

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> str:
        """Cancel a run; see ``Client.cancel``."""
        outcome = self.scripts.cancel(run_id, reason).run()
        if outcome.status == "cancelled":
            try:  # take its job off its queue (a worker would skip it anyway)
                RunJob.fetch(run_id, connection=self.redis, serializer=SERIALIZER).cancel()
            except (NoSuchJobError, InvalidJobOperation):
                pass
        elif outcome.status == "requested":
            try:
                send_stop_job_command(self.redis, run_id, serializer=SERIALIZER)
            except (InvalidJobOperation, NoSuchJobError):
                pass  # the worker sees the durable request at its next heartbeat
        return outcome.status
