"""Running one attempt of a flow run: its source, its environment, its process, until it ends.

The flow runs as the env's interpreter on the bootstrap (``launcher.py``) in a new session (its
own process group), with stdin at EOF; ``attempt.py`` streams its output and stops it. The
executor knows nothing of RQ: the worker hands it a claimed run and a hook that adds the
worker's own heartbeat commands to each of the attempt's heartbeats.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from redis.client import Pipeline

from envflow.errors import EnvActivationError, EnvNotFound
from envflow.models import DeploymentRecord, EnvKind, RunState
from envflow.output.writer import OutputWriter, make_echo
from envflow.settings import Settings
from envflow.store.protocol import Beat, Claimed, RunScripts

from .attempt import AttemptLoop
from .env_cache import EnvCache, Prepared
from .environments import flow_base
from .flowenv.sandbox import probe
from .identity import private_dir
from .launcher import Sandbox, split_own
from .outcome import Outcome
from .prepare import Interrupted, prepare_env
from .sources import FlowSources
from .stops import Deadline, StopRequest
from .warm import WarmPool, warm_key

# Envs found on disk, which can vanish between a worker's look and a run (a venv deleted, a mount gone).
GONE_KINDS = (EnvKind.VENV, EnvKind.CONDA, EnvKind.CONDA_PREFIX)
GIVE_BACK_MAX = 3  # times a worker returns one run to its queue for that

log = logging.getLogger("envflow.worker")

HeartbeatHook = Callable[[Pipeline], None]


def flow_sandbox(settings: Settings) -> Sandbox:
    """What flows are kept from: the state dir (sources, name slots, ``envflow up``'s password) and the
    built envs, which they may read and run but not change. Both exist before any flow runs: a
    missing one could be made by a flow."""
    for path in (settings.state_dir, settings.env_cache_dir):
        private_dir(path)
    if not settings.flow_sandbox:
        note = "turned off (ENVFLOW_FLOW_SANDBOX=false): flows can reach other processes, the state dir and built envs"
        log.warning("flow sandbox: %s", note)
        return Sandbox(deny=(), read=(), on=False, note=note)
    on, note = probe()
    if on:
        log.info("flow sandbox: %s", note)
    else:
        log.warning("flow sandbox: %s", note)
    return Sandbox(deny=(str(settings.state_dir),), read=(str(settings.env_cache_dir),), on=on, note=note)


class Executor:
    """Runs attempts for one worker."""

    def __init__(self, worker_name: str, settings: Settings, scripts: RunScripts, env_cache: EnvCache) -> None:
        self.worker_name = worker_name
        self.settings = settings
        self.scripts = scripts
        self.env_cache = env_cache
        self.stops = StopRequest()
        self.sources = FlowSources(scripts.redis, settings.state_dir, worker_name)
        self.pool = WarmPool(settings.warm_max, settings.warm_idle, flow_sandbox(settings))
        self.last_key: tuple[Any, ...] | None = None
        self.base_environ = flow_base(os.environ, settings)  # the worker's environment never changes
        self._given_back: dict[str, int] = {}  # runs returned to their queue because their env was gone

    def execute(self, claimed: Claimed, on_heartbeat: HeartbeatHook | None = None) -> Outcome:
        """Run one claimed attempt to its end and return how it ended (not yet recorded).

        :param on_heartbeat: adds commands to each heartbeat's pipeline (the worker's RQ bookkeeping).
        """
        run_id, attempt, spec = claimed.run.id, claimed.attempt, claimed.deployment
        writer = OutputWriter(self.scripts, run_id, attempt,
                              echo=make_echo(run_id[:8], self.settings.history_max_bytes) if spec.stream_output else None)
        beat = self._beat(run_id, attempt, on_heartbeat)
        deadline = Deadline(claimed.run.timeout)  # covers the whole attempt, activation included
        try:
            flow_file, flow_source = self.sources.get(spec)
            prepared = prepare_env(self.env_cache, spec, self.base_environ, beat=beat, stops=self.stops,
                                   interval=self.settings.heartbeat_interval, deadline=deadline, writer=writer)
            run_spec = {
                "flow_file": str(flow_file),
                "flow_path": spec.flow_path,
                "path0": self.sources.search_dir(spec),
                "flow_source": flow_source,
                "flow_name": spec.flow_name,
                "parameters": claimed.run.parameters,
                "environ": {"ENVFLOW_RUN_ID": run_id, "ENVFLOW_RUN_ATTEMPT": str(attempt)},
            }
        except Interrupted as stop:
            writer.note(f"stopped before the flow started: {stop.outcome.reason}")
            writer.flush_until_done()
            return stop.outcome
        except EnvNotFound as e:
            if claimed.run.route and spec.env.kind in GONE_KINDS and self._may_give_back(run_id):
                # It came for an env this worker advertised, gone a moment ago: not the run's fault.
                return Outcome(RunState.PENDING, error_type=type(e).__name__, error=str(e), env_gone=True)
            return self._failed(writer, e)
        except Exception as e:  # noqa: BLE001 - one run's bad input fails that run, never the worker
            return self._failed(writer, e)
        return self._run(run_id, prepared, spec, run_spec, writer, beat, deadline)

    def _may_give_back(self, run_id: str) -> bool:
        """Whether this worker may return the run to its queue once more (a few times at most: an env that
        keeps being advertised and failing must end the run, not loop)."""
        count = self._given_back.get(run_id, 0)
        if count >= GIVE_BACK_MAX:
            return False
        self._given_back = {**dict(list(self._given_back.items())[-100:]), run_id: count + 1}
        return True

    def _failed(self, writer: OutputWriter, error: Exception) -> Outcome:
        message = str(error)
        writer.note(getattr(error, "shown", None) or message)  # what the output has not said already
        writer.flush_until_done()
        if isinstance(error, (EnvNotFound, EnvActivationError)):
            kind = type(error).__name__
        else:
            kind = "FlowFileNotFound" if isinstance(error, OSError) else type(error).__name__
        return Outcome(RunState.FAILED, error_type=kind, error=message)

    def _run(self, run_id: str, prepared: Prepared, spec: DeploymentRecord, run_spec: dict[str, Any],
             writer: OutputWriter, beat: Callable[[], Beat], deadline: Deadline) -> Outcome:
        python, preload = prepared.python, tuple(spec.preload)
        key = warm_key(prepared, preload)
        try:
            variables, own = split_own(prepared.variables, spec.env_vars)
            flow = self.pool.launch(python, variables, key, preload, str(spec.env), own)
        except Exception as e:  # noqa: BLE001 - OSError, ValueError (a NUL in a variable), ...: the run fails
            writer.note(f"cannot start {python}: {e}")
            writer.flush_until_done()
            return Outcome(RunState.FAILED, error_type="SpawnError", error=f"cannot start {python}: {e}")
        self.last_key = key
        try:
            flow.send(run_spec)
            outcome = AttemptLoop(run_id, flow.proc, flow.result_r, writer, settings=self.settings, stops=self.stops,
                                  beat=beat, deadline=deadline).loop()
            outcome.start = flow.how
            return outcome
        finally:
            flow.close()

    def prepare_next(self) -> None:
        """Between runs (off every run's critical path): have the last run's key ready for the next one."""
        if self.last_key is not None and not self.stops.shutdown_at:
            self.pool.replenish(self.last_key)
        self.last_key = None

    def _beat(self, run_id: str, attempt: int, on_heartbeat: HeartbeatHook | None) -> Callable[[], Beat]:
        """One heartbeat: renew the lease (and the hook's commands) in one round trip."""

        def beat() -> Beat:
            call = self.scripts.heartbeat(run_id, attempt, self.worker_name)
            with self.scripts.redis.pipeline(transaction=False) as pipe:
                call.queue(pipe)
                if on_heartbeat is not None:
                    on_heartbeat(pipe)
                return call.result(pipe.execute(raise_on_error=False)[0])

        return beat
