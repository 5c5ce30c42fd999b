"""Preparing a run's environment within its timeout: a cached activation at once, an uncached one
in a thread while the attempt's lease is kept alive and cancels are watched for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis

from envflow.models import DeploymentRecord, RunState
from envflow.protocol import Beat

from .env_cache import EnvCache, Prepared
from .outcome import Outcome
from .stops import Deadline, StopRequest

log = logging.getLogger("envflow.worker")


class Interrupted(Exception):
    """The run was stopped before its flow process started."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def prepare_env(
    env_cache: EnvCache,
    spec: DeploymentRecord,
    base: Mapping[str, str],
    *,
    beat: Callable[[], Beat],
    interval: float,
    stops: StopRequest,
    deadline: Deadline,
) -> Prepared:
    """The run's environment (``env_cache.prepare``), with the attempt's heartbeat going meanwhile.

    :raises Interrupted: cancelled, timed out or taken over while activating.
    """
    prepared = env_cache.cached(spec.env, base, spec.env_vars)
    if prepared is not None:
        return prepared
    box: dict[str, Any] = {}

    def prepare() -> None:
        try:
            box["value"] = env_cache.prepare(spec.env, base, spec.env_vars)
        except Exception as e:  # handed to the run's thread below
            box["error"] = e
            return
        environment = box["value"].environment  # activated just now: its warnings are new
        for warning in environment.warnings:
            log.warning("%s: %s", environment.describe(), warning)

    thread = threading.Thread(target=prepare, name="envflow-activation", daemon=True)
    thread.start()
    while True:
        thread.join(interval)
        if not thread.is_alive():
            break
        try:
            status = beat()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            continue
        if status is Beat.LOST:
            raise Interrupted(Outcome(RunState.CRASHED, reason="the run was taken over", lost=True))
        if status is Beat.CANCEL or stops.cancel.is_set():
            raise Interrupted(Outcome(RunState.CANCELLED, reason="cancelled by request", error="cancelled by request"))
        if deadline.passed():
            reason = f"{deadline.describe()}, while its environment was being activated"
            raise Interrupted(Outcome(RunState.TIMED_OUT, reason=reason, error=reason))
    if "error" in box:
        raise box["error"]
    return box["value"]
