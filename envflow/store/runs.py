"""Run records in Redis: creating runs (record + RQ job in one transaction), reading and listing them.

A run is the hash ``envflow:run:<id>`` (its fields: ``run_hash.py``); its state changes only
through the Lua scripts in ``envflow/store/lua`` so that each transition is atomic and fenced by the
attempt number. Listings go through ``queries.py``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError

from ..errors import RunNotFound
from ..hook_spec import hooked_events
from ..jobs import RUN_FLOW
from ..models import DeploymentRecord, RunRecord, RunState
from ..settings import Settings
from ..states import CODES
from . import indexes, keys, routing, run_hash
from .jobs import SERIALIZER, Queues, RunJob
from .protocol import RunScripts, now_text
from .queries import Queries
from .replication import ReplicaWait
from .run_ids import new_run_id

if TYPE_CHECKING:
    from .reaper import Reaper

# RQ's job of a run that completed is deleted at once: nothing of RQ's needs it (envflow sets no
# dependents, results or repeats) and the run record holds the outcome. One that failed (or was
# cancelled, timed out, crashed) stays this many seconds in RQ's failed registry, for dashboards.
FAILED_JOB_TTL = 60


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
    deployment: DeploymentRecord,
    spec_digest: str,
    parameters: dict[str, Any],
    created_at: str,
    state: RunState,
    timeout: float | None,
    scheduled_for: float | None,
    schedule: str | None,
    route: str | None,
    started_by: str | None = None,
) -> dict[str | bytes, str | int | float]:
    """The fields of a new run's hash (layout: ``run_hash.py``; the deployment as a snapshot reference)."""
    fields: dict[str | bytes, str | int | float] = {
        "deployment": deployment.name,
        "queue": deployment.queue,
        "state": state.value,
        "created_at": created_at,
        "transitions": f"{CODES[state]}0/0",
        "spec": run_hash.spec_field(spec_digest),
    }
    if deployment.flow_name != run_hash.flow_of(deployment.name):
        fields["flow_name"] = deployment.flow_name
    if deployment.retries:
        fields["retries"] = deployment.retries
    if deployment.tags:  # the limits it is under: its deployment's own and its tags' (lua/_limits.lua)
        fields["tags"] = json.dumps(list(dict.fromkeys(deployment.tags)), separators=(",", ":"))
    if deployment.on_limit == "cancel":
        fields["on_limit"] = "cancel"
    if parameters:
        fields["parameters"] = json.dumps(parameters, separators=(",", ":"))
    if route is not None:
        fields["route"] = route
    if timeout is not None:
        fields["timeout"] = timeout
    if scheduled_for is not None:
        fields["scheduled_for"] = now_text(scheduled_for)
    if schedule is not None:
        fields["schedule"] = schedule
    if deployment.hooks:  # the events its hooks want, read by the transition scripts (lua/_hooks.lua)
        fields["hooks_on"] = hooked_events(deployment.hooks)
    if started_by is not None:
        fields["started_by"] = started_by
    return fields


class RunStore:
    """Reads and writes run records; shared by the client, the worker and the scheduler."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = RunScripts(redis, settings)
        self.queues = Queues(redis)
        self.queries = Queries(redis)

    @cached_property
    def replicas(self) -> ReplicaWait:
        """The wait for replicas after a run's creation (``replication.py``)."""
        return ReplicaWait(self.redis, self.settings)

    @cached_property
    def reaper(self) -> Reaper:
        """Reaps this store's runs when their worker died (imported on first use: RQ's registries)."""
        from .reaper import Reaper

        return Reaper(self.redis, self.settings, self.scripts, self.queues)

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
        started_by: str | None = None,
        pipeline: Pipeline | None = None,
    ) -> str:
        """Record a new run and enqueue its job, atomically (one MULTI/EXEC unless ``pipeline`` is given),
        then wait for the replicas to have it (``replication.py``; not when ``pipeline`` is given).

        :param scheduled_for: a future time makes the run SCHEDULED, enqueued by RQ's scheduler then.
        :param started_by: ``"<run id>:<event>"`` of the run whose hook starts this one.
        """
        run_id = run_id or new_run_id()
        now = time.time()
        created_at = now_text(now)
        delayed = scheduled_for is not None and scheduled_for > now + 0.5
        state = RunState.SCHEDULED if delayed else RunState.PENDING
        spec = deployment.model_dump_json()
        digest = run_hash.spec_digest(spec)
        route = routing.route_key(deployment.env)
        fields = _new_record(deployment, digest, parameters, created_at, state,
                             timeout if timeout is not None else deployment.timeout, scheduled_for, schedule, route,
                             started_by)
        pipe = pipeline if pipeline is not None else self.redis.pipeline(transaction=True)
        if not pipe.explicit_transaction:
            pipe.multi()  # RQ's enqueue expects a pipeline already in MULTI once commands are queued
        # The deployment as this run was created with it, shared by every run of that version; kept a
        # run ttl after the last run created or started with it.
        pipe.set(keys.spec(digest), spec, ex=self.settings.run_ttl)
        pipe.hset(keys.run(run_id), mapping=fields)
        indexes.add(pipe, run_id, deployment.name, state, float(created_at))
        # Waiting runs are indexed by when they became due, for the reaper's stuck-job check.
        due = scheduled_for if delayed and scheduled_for else now
        pipe.zadd(keys.PENDING_RUNS, {run_id: due})
        if deployment.late_after:  # the reaper's pass fires its LATE event then, if it has not started
            pipe.zadd(keys.LATE_RUNS, {run_id: due + deployment.late_after})
        queue = self.queue(routing.rq_queue(deployment.queue, route))
        job = self._job(queue, deployment, run_id)
        if delayed:
            assert scheduled_for is not None
            queue.schedule_job(job, datetime.fromtimestamp(scheduled_for, tz=timezone.utc), pipeline=pipe)
        else:
            queue.enqueue_job(job, pipeline=pipe)
        if pipeline is None:
            pipe.execute()
            self.replicas.wait(f"run {run_id[:8]}")
        return run_id

    def _job(self, queue: Queue, deployment: DeploymentRecord, run_id: str) -> RunJob:
        retry = None
        if deployment.retries:
            retry = Retry(max=deployment.retries, interval=retry_intervals(deployment.retries, deployment.retry_delay))
        job = queue.create_job(
            RUN_FLOW,
            args=[run_id],
            job_id=run_id,
            timeout=-1,  # envflow enforces run timeouts itself, with the cancel kill path
            result_ttl=0,
            failure_ttl=FAILED_JOB_TTL,
            retry=retry,
        )
        # No description: the job's id is the run's, and a ninth field would double the size of the
        # job hash's table in Redis (RQ would otherwise describe it by its call).
        job.description = None
        return job  # type: ignore[return-value]

    def get(self, run_id: str) -> RunRecord:
        raw = self.redis.hgetall(keys.run(run_id))
        if not raw:
            raise RunNotFound(f"no run {run_id}; list runs with `envflow run ls`")
        return run_hash.record(raw, run_id)

    def resolve_id(self, text: str) -> str:
        """A full run id from an id or a unique prefix of at least 4 characters (see ``Queries.resolve_id``)."""
        return self.queries.resolve_id(text)

    def recent(self, deployment: str | None = None, state: RunState | None = None, limit: int = 20) -> list[RunRecord]:
        """Newest runs first, optionally of one deployment and/or in one state."""
        return self.queries.run_records(deployment, state, limit).runs

    def deployments_of(self, run_ids: list[str]) -> list[DeploymentRecord | None]:
        """The deployment each run was created with (its snapshot), in two pipelined round trips."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hget(keys.run(run_id), "spec")
            fields = [raw.decode() if raw else None for raw in pipe.execute()]
        refs = [run_hash.snapshot_ref(f) if f else None for f in fields]
        with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.get(keys.spec(ref) if ref else keys.spec(""))
            snapshots = [raw.decode() if raw else None for raw in pipe.execute()]
        out: list[DeploymentRecord | None] = []
        for field, snapshot in zip(fields, snapshots):
            resolved = run_hash.spec_json(field, snapshot) if field else None
            try:
                out.append(DeploymentRecord.model_validate_json(resolved) if resolved else None)
            except ValueError:
                out.append(None)
        return out

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
            # Take its job off its queue (a worker would skip it anyway) and out of Redis: RQ's cancel
            # would keep it in a registry RQ never cleans.
            try:
                RunJob.fetch(run_id, connection=self.redis, serializer=SERIALIZER).delete()
            except (NoSuchJobError, InvalidJobOperation):
                pass
        elif outcome.status == "requested":
            try:
                send_stop_job_command(self.redis, run_id, serializer=SERIALIZER)
            except (InvalidJobOperation, NoSuchJobError):
                pass  # the worker sees the durable request at its next heartbeat
        return outcome.status
