"""Running one attempt of a flow run: spawn the env's interpreter, stream, stop, report.

The flow runs as ``<env python> -u bootstrap.py`` in a new session (its own process
group), with stdin at EOF. One loop multiplexes the flow's stdout and stderr, its result
pipe, its exit (a pidfd), and a wake-up pipe that other threads use to ask for a stop.
Stopping (cancel, timeout, shutdown) sends SIGTERM to the whole group, then SIGKILL
after the grace period; when the flow returns, whatever it left running in its group is
killed. The heartbeat renews the run's lease and notices cancels recorded in Redis.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

import envflow.flows
from envflow import keys
from envflow.errors import EnvActivationError, EnvNotFound
from envflow.models import DeploymentRecord, RunState
from envflow.runstore import RunStore
from envflow.settings import Settings

from .env_cache import EnvCache, Prepared
from .launcher import Launcher
from .output_writer import OutputWriter, make_echo

log = logging.getLogger("envflow.worker")

FLOWS_PY = Path(envflow.flows.__file__)
READ_SIZE = 65536
CACHE_MAX_AGE = 14 * 24 * 3600  # seconds an unused cached flow source or compiled code is kept
DRAIN_GRACE = 1.0  # seconds to collect output after the flow exited and its group was killed


@dataclass
class Outcome:
    """How an attempt ended."""

    state: RunState
    exit_code: int | None = None
    result: str | None = None  # JSON text of the flow's return value
    result_error: str | None = None
    error_type: str | None = None
    error: str | None = None
    reason: str | None = None
    lost: bool = False  # the run was taken away from this attempt; record nothing


class _Interrupted(Exception):
    """The run was stopped before its flow process started."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class StopRequest:
    """Thread-safe stop requests for the running attempt, waking its loop through a pipe."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.cancel = threading.Event()
        self.shutdown_at: float | None = None  # monotonic time the worker was asked to stop

    @property
    def fd(self) -> int:
        return self._read

    def request_cancel(self) -> None:
        self.cancel.set()
        self._wake()

    def request_shutdown(self) -> None:
        if self.shutdown_at is None:
            self.shutdown_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._write, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake

    def drain(self) -> None:
        try:
            while os.read(self._read, 1024):
                pass
        except BlockingIOError:
            pass

    def reset(self) -> None:
        self.cancel.clear()
        self.drain()


class Executor:
    """Runs attempts for one worker."""

    def __init__(
        self,
        worker_name: str,
        settings: Settings,
        store: RunStore,
        env_cache: EnvCache,
    ) -> None:
        self.worker_name = worker_name
        self.settings = settings
        self.store = store
        self.redis = store.redis
        self.env_cache = env_cache
        self.stops = StopRequest()
        # Set by the worker for each run: RQ's own heartbeats, sent with envflow's.
        self.heartbeat_extra: Callable[[redis.client.Pipeline], None] | None = None
        self.sources_dir = settings.state_dir / "sources"
        self.code_cache = settings.state_dir / "code-cache"
        self.launcher = Launcher()

    # Preparation

    def prune_caches(self, older_than: float = CACHE_MAX_AGE) -> int:
        """Delete cached flow sources and compiled code untouched for ``older_than`` seconds
        (both come back on demand: sources from Redis, code by compiling); returns the count."""
        cutoff = time.time() - older_than
        removed = 0
        for root in (self.sources_dir, self.code_cache):
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*"), reverse=True):  # files before their directories
                try:
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                    elif path.is_dir() and not any(path.iterdir()):
                        path.rmdir()
                except OSError:
                    pass
        return removed

    def flow_file(self, spec: DeploymentRecord) -> Path:
        """The flow file on this worker: the cached copy of stored source, or the referenced path."""
        if spec.flow_storage == "path":
            path = Path(spec.flow_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"flow file {path} does not exist on worker {self.worker_name}; deployments with "
                    "flow_storage='path' need the file mounted at the same path on every worker"
                )
            return path
        assert spec.source_digest
        target = self.sources_dir / spec.source_digest / Path(spec.flow_path).name
        if not target.is_file():
            source = self.redis.get(keys.source(spec.source_digest))
            if source is None:
                raise FileNotFoundError(
                    f"the source of {spec.flow_path} (sha256 {spec.source_digest[:12]}) is missing from Redis; "
                    "register the deployment again with `envflow deployment create`"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(source)
            os.replace(tmp, target)
        return target

    # Execution

    def execute(self, run_id: str, attempt: int, fields: dict[str, str]) -> Outcome:
        """Run one claimed attempt to its end and return how it ended (not yet recorded)."""
        spec = DeploymentRecord.model_validate_json(fields["spec"])
        short = run_id[:8]
        writer = OutputWriter(
            self.redis,
            self.store.scripts,
            run_id,
            attempt,
            max_lines=self.settings.history_max_lines,
            history_ttl=self.settings.history_ttl,
            max_line_bytes=self.settings.max_line_bytes,
            buffer_limit=self.settings.output_buffer_bytes,
            echo=make_echo(short) if spec.stream_output else None,
        )
        timeout = float(fields["timeout"]) if fields.get("timeout") else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            flow_file = self.flow_file(spec)
            prepared = self._prepare_env(run_id, attempt, spec, deadline, timeout)
        except (EnvNotFound, EnvActivationError, FileNotFoundError, OSError) as e:
            message = str(e)
            writer.note(message)
            self._flush_until_done(writer)
            kind = type(e).__name__ if isinstance(e, (EnvNotFound, EnvActivationError)) else "FlowFileNotFound"
            return Outcome(RunState.FAILED, error_type=kind, error=message)
        except _Interrupted as stop:
            writer.note(f"stopped before the flow started: {stop.outcome.reason}")
            self._flush_until_done(writer)
            return stop.outcome
        run_spec = {
            "flow_file": str(flow_file),
            "flow_name": spec.flow_name,
            "parameters": json.loads(fields.get("parameters") or "{}"),
            "flows_path": str(FLOWS_PY),
            "code_cache": str(self.code_cache),
            "environ": {"ENVFLOW_RUN_ID": run_id, "ENVFLOW_RUN_ATTEMPT": str(attempt)},
        }
        # The timeout covers the whole attempt, activation included.
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        return self._run(run_id, attempt, prepared, run_spec, remaining, writer, timeout)

    def _prepare_env(
        self, run_id: str, attempt: int, spec: DeploymentRecord, deadline: float | None, timeout: float | None
    ) -> Prepared:
        """The run's environment; a slow (uncached) activation runs in a thread while this one
        keeps the lease alive and watches for a cancel."""
        prepared = self.env_cache.cached(spec.env, os.environ, spec.env_vars)
        if prepared is not None:
            return prepared
        box: dict[str, Any] = {}

        def prepare() -> None:
            try:
                box["value"] = self.env_cache.prepare(spec.env, os.environ, spec.env_vars)
            except Exception as e:  # handed to the run's thread below
                box["error"] = e
                return
            environment = box["value"].environment  # activated just now: its warnings are new
            for warning in environment.warnings:
                log.warning("%s: %s", environment.describe(), warning)

        thread = threading.Thread(target=prepare, name="envflow-activation", daemon=True)
        thread.start()
        while True:
            thread.join(self.settings.heartbeat_interval)
            if not thread.is_alive():
                break
            try:
                status = self.heartbeat(run_id, attempt)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                continue
            if status < 0:
                raise _Interrupted(Outcome(RunState.CRASHED, reason="the run was taken over", lost=True))
            if status == 1 or self.stops.cancel.is_set():
                raise _Interrupted(Outcome(RunState.CANCELLED, reason="cancelled by request", error="cancelled by request"))
            if deadline is not None and time.monotonic() >= deadline:
                reason = f"timed out after {timeout:g}s, while its environment was being activated"
                raise _Interrupted(Outcome(RunState.TIMED_OUT, reason=reason, error=reason))
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _run(
        self,
        run_id: str,
        attempt: int,
        prepared: Prepared,
        run_spec: dict,
        timeout: float | None,
        writer: OutputWriter,
        configured_timeout: float | None = None,
    ) -> Outcome:
        python, variables = prepared.python, prepared.variables
        key = (str(python), prepared.stamp, tuple(sorted(variables.items())))
        try:
            flow = self.launcher.launch(python, variables, key)
        except OSError as e:
            writer.note(f"cannot start {python}: {e}")
            self._flush_until_done(writer)
            return Outcome(RunState.FAILED, error_type="SpawnError", error=f"cannot start {python}: {e}")
        try:
            flow.send(run_spec)
            if not self.stops.shutdown_at:
                self.launcher.prepare_next(python, variables, key)
            return _Attempt(self, run_id, attempt, flow.proc, flow.result_r, timeout, writer,
                            configured_timeout).loop()
        finally:
            flow.close()

    def _flush_until_done(self, writer: OutputWriter) -> None:
        """Send what the writer holds, waiting out a Redis outage (with backoff)."""
        while not writer.flush(force=False):
            if writer.fenced:
                return
            time.sleep(max(writer.retry_at - time.monotonic(), 0.01))

    def heartbeat(self, run_id: str, attempt: int) -> int:
        """Renew the lease; 1 = cancel requested, 0 = go on, -1 = the attempt is no longer ours."""
        scripts = self.store.scripts
        hb_keys, hb_args = [keys.run(run_id), keys.lease(run_id)], [attempt, self.worker_name,
                                                                     int(self.settings.lease_ttl * 1000)]
        with self.redis.pipeline(transaction=False) as pipe:
            scripts.queue(pipe, scripts.heartbeat, hb_keys, hb_args)
            if self.heartbeat_extra is not None:
                self.heartbeat_extra(pipe)
            result = pipe.execute(raise_on_error=False)[0]
        return int(scripts.rerun_if_missing(result, scripts.heartbeat, hb_keys, hb_args))  # type: ignore[arg-type]


class _Attempt:
    """The event loop of one running flow process."""

    def __init__(
        self,
        executor: Executor,
        run_id: str,
        attempt: int,
        proc: subprocess.Popen,
        result_fd: int,
        timeout: float | None,
        writer: OutputWriter,
        configured_timeout: float | None = None,
    ) -> None:
        self.x = executor
        self.settings = executor.settings
        self.run_id = run_id
        self.attempt = attempt
        self.proc = proc
        self.pgid = proc.pid  # start_new_session: the flow leads its own group
        self.writer = writer
        self.result_fd = result_fd
        self.result_data = b""
        self.started = time.monotonic()
        self.deadline = None if timeout is None else self.started + timeout
        self.timeout = configured_timeout if configured_timeout is not None else timeout
        self.next_heartbeat = self.started + self.settings.heartbeat_interval
        self.stop_reason: tuple[RunState, str] | None = None
        self.kill_at: float | None = None  # when SIGKILL follows the SIGTERM
        self.exited_at: float | None = None
        self.selector = selectors.DefaultSelector()
        self.open_streams: dict[int, str] = {}
        self.paused = False
        self.pidfd: int | None = None

    def loop(self) -> Outcome:
        sel = self.selector
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for pipe, code in ((self.proc.stdout, "o"), (self.proc.stderr, "e")):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self.open_streams[fd] = code
            sel.register(fd, selectors.EVENT_READ, code)
        sel.register(self.result_fd, selectors.EVENT_READ, "r")
        sel.register(self.x.stops.fd, selectors.EVENT_READ, "w")
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
            sel.register(self.pidfd, selectors.EVENT_READ, "p")
        except (AttributeError, OSError):
            self.pidfd = None  # no pidfd (old kernel, not Linux): poll the exit instead
        try:
            return self._loop()
        finally:
            self._kill_group(signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.wait()
            sel.close()
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()
            if self.pidfd is not None:
                os.close(self.pidfd)

    def _loop(self) -> Outcome:
        sel, writer = self.selector, self.writer
        while True:
            now = time.monotonic()
            if self.exited_at is not None and (not self.open_streams or now - self.exited_at > DRAIN_GRACE):
                break
            for key, _ in sel.select(self._wait_time(now)):
                tag = key.data
                if tag in ("o", "e"):
                    self._read_stream(key.fd, tag)
                elif tag == "r":
                    self._read_result()
                elif tag == "p":
                    self._on_exit()
                elif tag == "w":
                    self.x.stops.drain()
            if self.pidfd is None and self.exited_at is None and self.proc.poll() is not None:
                self._on_exit()
            now = time.monotonic()
            self._check_stops(now)
            if now >= self.next_heartbeat:
                self._heartbeat(now)
            writer.flush()
            if writer.fenced and self.stop_reason is None:
                self._begin_stop(RunState.CRASHED, "the run was taken over (this worker lost its lease)", now)
            self._pause_if_full()
        for code in ("o", "e"):
            writer.close_stream(code)
        if self.exited_at is not None and self.open_streams:
            writer.note("some output was not collected: a process that left the run's process group still holds it")
        self.x._flush_until_done(writer)
        return self._outcome()

    def _wait_time(self, now: float) -> float:
        deadlines = [self.next_heartbeat]
        if self.stop_reason is None:
            if self.deadline is not None:
                deadlines.append(self.deadline)
            if self.x.stops.shutdown_at is not None:
                deadlines.append(self.x.stops.shutdown_at + self.settings.shutdown_grace)
        if self.kill_at is not None:
            deadlines.append(self.kill_at)
        if self.writer.has_pending:
            deadlines.append(self.writer.retry_at)
        if self.exited_at is not None:
            deadlines.append(self.exited_at + DRAIN_GRACE)
        wait = max(min(deadlines) - now, 0.0)
        return min(wait, 0.05) if self.pidfd is None else wait

    def _read_stream(self, fd: int, code: str) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        if data:
            self.writer.feed(code, data)
            return
        self.selector.unregister(fd)
        del self.open_streams[fd]
        self.writer.close_stream(code)

    def _read_result(self) -> None:
        data = os.read(self.result_fd, READ_SIZE)
        if data:
            self.result_data += data
        else:
            self.selector.unregister(self.result_fd)

    def _on_exit(self) -> None:
        if self.exited_at is not None:
            return
        self.proc.wait()
        self.exited_at = time.monotonic()
        if self.pidfd is not None:
            self.selector.unregister(self.pidfd)
        # Whatever the flow left running in its group ends with it.
        self._kill_group(signal.SIGKILL)
        self._resume_reading()
        try:
            while chunk := os.read(self.result_fd, READ_SIZE):
                self.result_data += chunk
        except (BlockingIOError, OSError):
            pass

    def _check_stops(self, now: float) -> None:
        stops = self.x.stops
        if self.stop_reason is None:
            if stops.cancel.is_set():
                self._begin_stop(RunState.CANCELLED, "cancelled by request", now)
            elif stops.shutdown_at is not None and now >= stops.shutdown_at + self.settings.shutdown_grace:
                self._begin_stop(
                    RunState.CANCELLED,
                    f"worker shutting down: the flow did not finish within {self.settings.shutdown_grace:g}s",
                    now,
                )
            elif self.deadline is not None and now >= self.deadline:
                assert self.timeout is not None
                self._begin_stop(RunState.TIMED_OUT, f"timed out after {self.timeout:g}s", now)
        if self.kill_at is not None and now >= self.kill_at and self.exited_at is None:
            self._kill_group(signal.SIGKILL)
            self.kill_at = None

    def _begin_stop(self, state: RunState, reason: str, now: float) -> None:
        self.stop_reason = (state, reason)
        if self.exited_at is not None:
            return
        self.writer.note(f"stopping the flow: {reason}")
        self._kill_group(signal.SIGTERM)
        self.kill_at = now + self.settings.cancel_grace

    def _kill_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _heartbeat(self, now: float) -> None:
        self.next_heartbeat = now + self.settings.heartbeat_interval
        try:
            status = self.x.heartbeat(self.run_id, self.attempt)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            log.warning("run %s: heartbeat failed (%s); the flow keeps running", self.run_id[:8], e)
            self.next_heartbeat = now + min(1.0, self.settings.heartbeat_interval)
            return
        if status == 1 and self.stop_reason is None:
            self._begin_stop(RunState.CANCELLED, "cancelled by request", now)
        elif status < 0 and self.stop_reason is None:
            self.writer.fenced = True
            self._begin_stop(RunState.CRASHED, "the run was taken over (this worker lost its lease)", now)

    def _pause_if_full(self) -> None:
        if self.writer.full and not self.paused:
            for fd in self.open_streams:
                self.selector.unregister(fd)
            self.paused = True
        elif self.paused and not self.writer.full:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.paused:
            for fd, code in self.open_streams.items():
                self.selector.register(fd, selectors.EVENT_READ, code)
            self.paused = False

    def _outcome(self) -> Outcome:
        code = self.proc.returncode
        lost = self.writer.fenced
        if self.stop_reason is not None:
            state, reason = self.stop_reason
            return Outcome(state, exit_code=code, reason=reason, error=reason, lost=lost)
        try:
            result = json.loads(self.result_data) if self.result_data else None
        except ValueError:
            result = None
        if result is None:
            how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
            message = f"the flow process ended without reporting a result ({how})"
            return Outcome(RunState.FAILED, exit_code=code, error_type="ProcessExit", error=message, lost=lost)
        if result.get("ok"):
            return Outcome(
                RunState.COMPLETED,
                exit_code=code,
                result=json.dumps(result["result"]) if "result" in result else None,
                result_error=result.get("result_error"),
                lost=lost,
            )
        return Outcome(
            RunState.FAILED,
            exit_code=code,
            error_type=result.get("error_type"),
            error=result.get("error"),
            lost=lost,
        )
