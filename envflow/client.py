"""The Python client: register deployments, start runs, follow, wait, cancel."""

from __future__ import annotations

import difflib
import json
import math
import time
import warnings
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from redis import Redis

from .connection import connect, wrap_errors
from .errors import ConfigError, DeploymentNotFound, EnvflowWarning, LimitNotFound, ParameterError
from .flow_run import FlowRun
from .models import DeploymentRecord, RunRecord, RunState, readable_deployments, unreadable
from .parameters import check_types, merge_parameters
from .settings import Settings, get_settings
from .store import keys, routing
from .store.deployments import DeploymentStore
from .store.limits import LimitInfo, Limits
from .store.queries import Page, RunFilter
from .store.runs import RunStore

if TYPE_CHECKING:
    from .deployments import Deployment


class Client:
    """Talks to envflow's Redis.

    :param redis_url: overrides ``ENVFLOW_REDIS_URL``.
    :param settings: a full settings object (default: read from the environment).
    """

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        base = settings or get_settings()
        self.settings = base.model_copy(update={"redis_url": redis_url}) if redis_url else base
        self.redis: Redis = connect(self.settings.redis_url)
        self.store = RunStore(self.redis, self.settings)
        self.deployment_store = DeploymentStore(self.redis)
        self.limit_store = Limits(self.redis, self.store.scripts)

    # Deployments

    def create_deployment(self, deployment: Deployment | DeploymentRecord, source: str | None = None,
                          requirements: str | None = None) -> DeploymentRecord:
        """Register (or update) a deployment; its flow file's source is stored with it unless it uses path
        storage, and so is its requirements file (both content-addressed).

        :param source: with a record: its flow file's source.
        :param requirements: with a record: its requirements file's text (``env.requirements_digest``).
        """
        from .deployment_files import record_and_files
        from .deployments import Deployment

        if isinstance(deployment, Deployment):
            record, source, requirements = record_and_files(deployment, self.settings.queue)
        else:
            record = deployment
        # The deployment's own parameters must suit the flow's annotations ("3" is stored as 3 for n: int).
        record = record.model_copy(
            update={"parameters": check_types(record.parameter_spec, record.parameters, record.flow_name)}
        )
        self._check_size(record.parameters, f"deployment {record.name}'s parameters (copied into each of its runs)")
        if record.schedules:
            # Scheduled runs use the deployment's own parameters: they must satisfy the flow.
            try:
                merge_parameters(record.parameter_spec, record.parameters, None, record.flow_name)
            except ParameterError as e:
                raise ParameterError(
                    f"deployment {record.name} has a schedule, but {e.args[0].split(';')[0]}: scheduled runs use "
                    "the deployment's parameters, so give it defaults (parameters={...})"
                ) from None
        with wrap_errors(self.redis):
            existing = self.deployment_store.raw(record.name)
            previous = next(iter(readable_deployments([(record.name, existing)])), None)
            if previous is not None:
                record = record.model_copy(update={"created_at": previous.created_at})
            try:
                payload = record.model_dump_json()
            except PydanticSerializationError as e:  # e.g. a file path that is not valid UTF-8
                raise ConfigError(f"deployment {record.name} cannot be stored: {e}") from None
            self.deployment_store.save(record, payload, source, requirements)
            if record.concurrency_limit is not None:
                self.limit_store.set(keys.deployment_limit(record.name), record.concurrency_limit)
            elif previous is not None and previous.concurrency_limit is not None:
                self.limit_store.remove(keys.deployment_limit(record.name))
            if previous is not None:
                self._retire(previous, record)
        return record

    def _check_size(self, parameters: dict[str, Any], what: str) -> None:
        """:raises ParameterError: ``parameters`` as JSON are over ``ENVFLOW_PARAMETERS_MAX_BYTES``."""
        limit = self.settings.parameters_max_bytes
        size = len(json.dumps(parameters, separators=(",", ":")).encode("utf-8")) if parameters else 0
        if size > limit:
            raise ParameterError(f"{what} are {size:,} bytes of JSON, over ENVFLOW_PARAMETERS_MAX_BYTES ({limit:,}); "
                                 "pass a path or a key to the data instead")

    def _retire(self, previous: DeploymentRecord, current: DeploymentRecord | None = None) -> None:
        """Let the flow source and requirements file ``previous`` stored, and no deployment uses any more,
        expire once runs that may still need them are gone."""
        kept = {current.source_digest, current.env.requirements_digest} if current is not None else set()
        stale = [(digest, kind) for digest, kind in ((previous.source_digest, "source"),
                                                     (previous.env.requirements_digest, "requirements"))
                 if digest and digest not in kept]
        if stale:
            self.deployment_store.retire(stale, self.settings.run_ttl)

    def deployments(self) -> list[DeploymentRecord]:
        with wrap_errors(self.redis):
            return self.deployment_store.all()

    def get_deployment(self, name: str) -> DeploymentRecord:
        """The deployment ``flow-name/deployment-name``.

        :raises DeploymentNotFound: with the closest registered names.
        """
        raw = self._stored_deployment(name)
        try:
            return DeploymentRecord.model_validate_json(raw)
        except ValidationError as e:
            raise ConfigError(unreadable(name, e)) from None

    def _stored_deployment(self, name: str) -> bytes:
        """The deployment's stored JSON, unchecked.

        :raises DeploymentNotFound: with the closest registered names.
        """
        with wrap_errors(self.redis):
            raw = self.deployment_store.raw(name)
            if raw is not None:
                return raw
            names = self.deployment_store.names()
        hint = ""
        if "/" not in name:
            hint = " (address deployments as flow-name/deployment-name)"
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            hint += f"; did you mean {', '.join(close)}?"
        elif names:
            more = f" and {len(names) - 10} more (`envflow deployment ls`)" if len(names) > 10 else ""
            hint += f"; registered: {', '.join(names[:10])}{more}"
        else:
            hint += "; none are registered: create one with `envflow deployment create FILE`"
        raise DeploymentNotFound(f"no deployment {name!r}{hint}")

    def delete_deployment(self, name: str) -> None:
        """Remove a deployment; one stored in a form envflow cannot read (any more) too."""
        records = readable_deployments([(name, self._stored_deployment(name))])
        with wrap_errors(self.redis):
            self.deployment_store.delete(name)
            if records:
                if records[0].concurrency_limit is not None:
                    self.limit_store.remove(keys.deployment_limit(name))
                self._retire(records[0])

    def pause_deployment(self, name: str) -> None:
        """Stop the scheduler from creating runs of this deployment (on-demand runs still work)."""
        self.get_deployment(name)
        with wrap_errors(self.redis):
            self.deployment_store.pause(name)

    def resume_deployment(self, name: str) -> None:
        self.get_deployment(name)
        with wrap_errors(self.redis):
            self.deployment_store.resume(name)

    def paused_deployments(self) -> set[str]:
        with wrap_errors(self.redis):
            return self.store.queries.paused_deployments()

    # Concurrency limits

    def set_limit(self, name: str, slots: int) -> None:
        """Allow at most ``slots`` RUNNING runs under the limit ``name`` (a tag: every run of a deployment
        with that tag; ``deployment:<flow>/<name>``: that deployment's own). Takes effect at once.

        :raises ConfigError: an empty name or a negative number of slots.
        """
        from .deployments import check_text

        if not name or not name.strip():
            raise ConfigError("name the limit: a deployment tag such as 'gpu'")
        try:
            check_text(name, "the limit's name")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise ConfigError(f"a limit's slots are a whole number, 0 or more (got {slots!r})")
        with wrap_errors(self.redis):
            self.limit_store.set(name, slots)

    def limits(self) -> list[LimitInfo]:
        """Every limit: its slots, the runs holding them (run id -> attempt) and how many runs wait."""
        with wrap_errors(self.redis):
            return self.limit_store.all()

    def remove_limit(self, name: str) -> None:
        """Remove a limit: its runs are no longer limited by it, and those waiting for it start.

        :raises LimitNotFound: there is no such limit.
        """
        with wrap_errors(self.redis):
            if not self.limit_store.remove(name):
                raise LimitNotFound(f"no limit {name!r}; list them with `envflow limit ls`")

    # Queues

    def pause_queue(self, name: str) -> None:
        """Workers start no runs from a paused queue; its runs wait there until it is resumed."""
        with wrap_errors(self.redis):
            self.redis.sadd(keys.PAUSED_QUEUES, name)

    def resume_queue(self, name: str) -> None:
        with wrap_errors(self.redis):
            self.redis.srem(keys.PAUSED_QUEUES, name)

    def queues(self) -> list[dict[str, Any]]:
        """Every queue envflow or RQ knows: queued and running counts, workers, paused."""
        with wrap_errors(self.redis):
            return self.store.queries.queues()

    def capable_workers(self, record: DeploymentRecord) -> list[str]:
        """Live workers of the deployment's queue that have its env (all of the queue's, for no env)."""
        route = routing.route_key(record.env)
        with wrap_errors(self.redis):
            if route is None:
                members = self.redis.smembers(keys.rq_workers(record.queue))
                return sorted(m.decode().removeprefix(keys.RQ_WORKER_PREFIX) for m in members)
            return sorted(m.decode() for m in self.redis.zrangebyscore(keys.route(record.queue, route), time.time(), "+inf"))

    def lacking_env(self, record: DeploymentRecord, patience: float = 3.0) -> str | None:
        """Why no live worker of the deployment's queue can run it, when some are live and none has its env;
        None when one has it, none is live, or it needs none. Waits up to ``patience`` seconds for them to look."""
        route = routing.route_key(record.env)
        if route is None:
            return None
        deadline = time.monotonic() + patience
        with wrap_errors(self.redis):
            while True:
                if routing.capable(self.redis, record.queue, route) or not routing.live_workers(self.redis, record.queue):
                    return None
                waiting = routing.waiting_for(self.redis, record.queue, route)
                if waiting is not None:
                    return waiting.message
                if time.monotonic() >= deadline:
                    return None  # they have not all looked yet: a run will say why once they have
                time.sleep(0.1)

    def why_waiting(self, record: DeploymentRecord) -> str:
        """What the workers of the deployment's queue have instead of its env, and why they lack it."""
        route = routing.route_key(record.env)
        with wrap_errors(self.redis):
            if route is None:
                return "no worker serves its queue"
            waiting = routing.waiting_for(self.redis, record.queue, route)
            return (waiting.message if waiting else
                    f"the workers of queue {record.queue} have not looked for {route} yet (they do every second)")

    def workers(self) -> list[dict[str, Any]]:
        """Live workers: name, host, state, queues, current run, and what each publishes (its warm processes)."""
        from rq.worker import Worker

        from .store.jobs import SERIALIZER

        with wrap_errors(self.redis):
            workers = sorted(Worker.all(connection=self.redis, serializer=SERIALIZER), key=lambda w: w.name)
            out = []
            for w, info in zip(workers, routing.published(self.redis, [w.name for w in workers])):
                out.append({"name": w.name, "host": w.hostname, "pid": w.pid, "state": w.get_state(),
                            # the queues users name: a worker is registered on its envs' sub-queues too
                            "queues": list(dict.fromkeys(routing.user_queue(q) for q in w.queue_names())),
                            "run": w.get_current_job_id(), **info})
        return out

    def source_changed(self, record: DeploymentRecord) -> str | None:
        """Say so when the flow file on this machine differs from the source stored with the deployment
        (which its runs use); None when it matches, is not here, or runs use the file itself."""
        import hashlib
        from pathlib import Path

        if record.flow_storage != "source" or not record.source_digest:
            return None
        path = Path(record.flow_path)
        try:
            if not path.is_file() or path.stat().st_size > 64 * 1024 * 1024:
                return None
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
        if digest == record.source_digest:
            return None
        return (f"{path} changed since {record.name} was registered; its runs use the stored source: "
                "`envflow deployment create` it again to use the file as it is now")

    def flow_source(self, record: DeploymentRecord) -> str | None:
        if not record.source_digest:
            return None
        raw = self.redis.get(keys.source(record.source_digest))
        return raw.decode("utf-8") if raw is not None else None

    def requirements_text(self, record: DeploymentRecord) -> str | None:
        """The requirements file stored with a deployment (None: it has none, or it is gone)."""
        digest = record.env.requirements_digest
        if not digest:
            return None
        with wrap_errors(self.redis):
            raw = self.redis.get(keys.requirements(digest))
        return raw.decode("utf-8") if raw is not None else None

    # Runs

    def run(self, name: str, parameters: dict[str, Any] | None = None, *, timeout: float | None = None) -> FlowRun:
        """Start a run of a deployment now; parameters are checked before anything is enqueued.

        :param name: ``flow-name/deployment-name``.
        :param parameters: override the deployment's default parameters.
        :param timeout: seconds after which the run is stopped (overrides the deployment's).
        :raises DeploymentNotFound: no such deployment.
        :raises ParameterError: unknown, missing or non-JSON parameters.
        """
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"timeout must be a finite number of seconds above 0, got {timeout}")
        record = self.get_deployment(name)
        merged = merge_parameters(record.parameter_spec, record.parameters, parameters, record.flow_name)
        self._check_size(merged, f"the parameters of this run of {name} (its deployment's defaults included)")
        with wrap_errors(self.redis):
            run_id = self.store.create(record, merged, timeout=timeout)
            run = FlowRun(self.store, run_id)
            route = routing.route_key(record.env)
            waiting = routing.waiting_for(self.redis, record.queue, route)
            if waiting is not None:  # None: a worker can take it, or they have not looked for a new env yet
                self.store.scripts.note_waiting([run_id], waiting).run()
                run.waiting = waiting.message
                warnings.warn(EnvflowWarning(f"run {run.short_id}: {waiting.message}"), stacklevel=2)
            else:
                queued = routing.queued(self.redis, record.queue, route)
                if queued is not None:  # said once, to whoever follows it; not a warning: queues are normal
                    self.store.scripts.note_waiting([run_id], queued).run()
        return run

    def get_run(self, run_id: str) -> FlowRun:
        """A handle on a run, by id or unique id prefix."""
        with wrap_errors(self.redis):
            return FlowRun(self.store, self.store.resolve_id(run_id))

    def runs(self, deployment: str | None = None, state: RunState | str | None = None, limit: int = 20) -> list[RunRecord]:
        """Recent runs, newest first."""
        with wrap_errors(self.redis):
            return self.store.recent(deployment, RunState(state) if isinstance(state, str) else state, limit)

    def find_runs(self, *, deployment: str | None = None, tag: str | None = None, queue: str | None = None,
                  worker: str | None = None, state: RunState | str | None = None, since: float | None = None,
                  until: float | None = None, limit: int = 20, cursor: str | None = None) -> Page[RunRecord]:
        """Runs newest first that match every filter given, a page at a time.

        :param tag: runs of the deployments that have this tag now.
        :param since: created at or after this time (Unix seconds); ``until``: at or before it.
        :param cursor: the ``cursor`` of the previous page, for the next one.
        """
        names: tuple[str, ...] | None = None
        if tag is not None:
            names = tuple(d.name for d in self.deployments() if tag in d.tags and deployment in (None, d.name))
        elif deployment is not None:
            names = (self.get_deployment(deployment).name,)
        where = RunFilter(names, RunState(state) if isinstance(state, str) else state, since, until, worker, queue)
        with wrap_errors(self.redis):
            return self.store.queries.find(where, limit, cursor)

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> str:
        """Cancel a run. Returns what happened: ``cancelled`` (it had not started), ``requested`` (its worker
        stops it: SIGTERM, then SIGKILL after the grace period) or ``ended`` (it had already ended)."""
        with wrap_errors(self.redis):
            return self.store.cancel(self.store.resolve_id(run_id), reason)
