"""Preparing a run's environment within its timeout: a cached activation at once, an uncached one
in a thread while the attempt's lease is kept alive and cancels are watched for."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from envflow.connection import TRANSIENT_ERRORS
from envflow.models import DeploymentRecord, RunState
from envflow.output.writer import OutputWriter
from envflow.store.protocol import Beat

from .env_cache import EnvCache, Prepared
from .outcome import Outcome
from .stops import Deadline, StopRequest

log = logging.getLogger("envflow.worker")

RELAY_INTERVAL = 0.05  # seconds between relays of an env's making to the run's output
STOP_WAIT = 10.0  # seconds a stopped run waits for its env's making to stop and clean up


class Interrupted(Exception):
    """The run was stopped before its flow process started."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class RunProgress:
    """Progress of an env being made for a run: queued by the preparing thread, written to the run's
    output by the run's own thread (the output writer is not thread-safe)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.making = False  # something reported: an env is being made, and stops when cancelled
        self._queue: queue.SimpleQueue[tuple[str, str | bytes]] = queue.SimpleQueue()

    def status(self, text: str) -> None:
        self.making = True
        self._queue.put(("note", text))

    def output(self, code: str, data: bytes) -> None:
        self.making = True
        self._queue.put((code, data))

    def drain(self, writer: OutputWriter) -> None:
        while True:
            try:
                code, data = self._queue.get_nowait()
            except queue.Empty:
                break
            if code == "note":
                writer.note(str(data))
            else:
                writer.feed(code, data if isinstance(data, bytes) else data.encode())
        writer.flush()


def prepare_env(
    env_cache: EnvCache,
    spec: DeploymentRecord,
    base: Mapping[str, str],
    *,
    beat: Callable[[], Beat],
    interval: float,
    stops: StopRequest,
    deadline: Deadline,
    writer: OutputWriter,
) -> Prepared:
    """The run's environment (``env_cache.prepare``), with the attempt's heartbeat going meanwhile and
    what making the env prints shown live in the run's output.

    :raises Interrupted: cancelled, timed out or taken over while preparing (making the env stops too).
    """
    prepared = env_cache.cached(spec.env, base, spec.env_vars)
    if prepared is not None:
        prepared.environment.touch()
        return prepared
    box: dict[str, Any] = {}
    progress = RunProgress()

    def prepare() -> None:
        try:
            box["value"] = env_cache.prepare(spec.env, base, spec.env_vars, progress)
        except Exception as e:  # handed to the run's thread below
            box["error"] = e
            return
        environment = box["value"].environment  # activated just now: its warnings are new
        for warning in environment.warnings:
            log.warning("%s: %s", environment.describe(), warning)

    thread = threading.Thread(target=prepare, name="envflow-activation", daemon=True)
    thread.start()
    try:
        _watch(thread, progress, writer, beat, interval, stops, deadline)
    except Interrupted:
        progress.cancelled.set()
        if progress.making:  # let it stop and clean up, the lease kept meanwhile
            _wait_stopped(thread, beat, interval)
        progress.drain(writer)
        raise
    progress.drain(writer)
    if "error" in box:
        raise box["error"]
    box["value"].environment.touch()
    return box["value"]


def _wait_stopped(thread: threading.Thread, beat: Callable[[], Beat], interval: float) -> None:
    until = time.monotonic() + STOP_WAIT
    while thread.is_alive() and time.monotonic() < until:
        thread.join(min(interval, max(until - time.monotonic(), 0.0)))
        try:
            beat()
        except TRANSIENT_ERRORS:
            pass


def _watch(thread: threading.Thread, progress: RunProgress, writer: OutputWriter, beat: Callable[[], Beat],
           interval: float, stops: StopRequest, deadline: Deadline) -> None:
    """Wait for ``thread``, relaying its progress, beating every ``interval``; raise Interrupted on a stop."""
    next_beat = time.monotonic() + interval
    while True:
        thread.join(RELAY_INTERVAL)
        progress.drain(writer)
        if not thread.is_alive():
            return
        if time.monotonic() < next_beat and not stops.cancel.is_set() and not deadline.passed():
            continue
        next_beat = time.monotonic() + interval
        try:
            status = beat()
        except TRANSIENT_ERRORS:
            continue
        if status is Beat.LOST:
            raise Interrupted(Outcome(RunState.CRASHED, reason="the run was taken over", lost=True))
        if status is Beat.CANCEL or stops.cancel.is_set():
            raise Interrupted(Outcome(RunState.CANCELLED, reason="cancelled by request", error="cancelled by request"))
        if deadline.passed():
            reason = f"{deadline.describe()}, while its environment was being activated"
            raise Interrupted(Outcome(RunState.TIMED_OUT, reason=reason, error=reason))
