"""The event loop of one running attempt.

One loop multiplexes the flow's stdout and stderr, its result pipe, its exit (a pidfd), and a
wake-up pipe that other threads use to ask for a stop. Stopping (cancel, timeout, shutdown)
sends SIGTERM to the whole process group, then SIGKILL after the grace period; when the flow
returns, whatever it left running in its group is killed. Heartbeats renew the run's lease and
notice cancels recorded in Redis.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from envflow.connection import TRANSIENT_ERRORS
from envflow.models import RunState
from envflow.output.writer import OutputWriter
from envflow.settings import Settings
from envflow.store.protocol import Beat

from .outcome import Outcome
from .report import ReportBuffer, capped_result, capped_text
from .stops import Deadline, StopRequest

if TYPE_CHECKING:
    from .launcher import RunProcess

log = logging.getLogger("envflow.worker")

READ_SIZE = 65536
DRAIN_GRACE = 1.0  # seconds to collect output after the flow exited and its group was killed


class AttemptLoop:
    """The event loop of one running flow process: its output, result, exit, stops and heartbeats."""

    def __init__(
        self,
        run_id: str,
        proc: RunProcess,
        result_fd: int,
        writer: OutputWriter,
        *,
        settings: Settings,
        stops: StopRequest,
        beat: Callable[[], Beat],
        deadline: Deadline,
    ) -> None:
        self.settings = settings
        self.stops = stops
        self.beat = beat
        self.run_id = run_id
        self.proc = proc
        self.pgid = proc.pid  # start_new_session: the flow leads its own group
        self.writer = writer
        self.result_fd = result_fd
        self.report = ReportBuffer(settings)
        self.deadline = deadline
        self.next_heartbeat = time.monotonic() + settings.heartbeat_interval
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
        sel.register(self.stops.fd, selectors.EVENT_READ, "w")
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
                    self.stops.drain()
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
        writer.flush_until_done()
        return self._outcome()

    def _wait_time(self, now: float) -> float:
        deadlines = [self.next_heartbeat]
        if self.stop_reason is None:
            if self.deadline.at is not None:
                deadlines.append(self.deadline.at)
            if self.stops.shutdown_at is not None:
                deadlines.append(self.stops.shutdown_at + self.settings.shutdown_grace)
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
            self.report.add(data)
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
                self.report.add(chunk)
        except (BlockingIOError, OSError):
            pass

    def _check_stops(self, now: float) -> None:
        stops = self.stops
        if self.stop_reason is None:
            if stops.cancel.is_set():
                self._begin_stop(RunState.CANCELLED, "cancelled by request", now)
            elif stops.shutdown_at is not None and now >= stops.shutdown_at + self.settings.shutdown_grace:
                self._begin_stop(
                    RunState.CANCELLED,
                    f"worker shutting down: the flow did not finish within {self.settings.shutdown_grace:g}s",
                    now,
                )
            elif self.deadline.passed(now):
                self._begin_stop(RunState.TIMED_OUT, self.deadline.describe(), now)
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
            status = self.beat()
        except TRANSIENT_ERRORS as e:
            log.warning("run %s: heartbeat failed (%s); the flow keeps running", self.run_id[:8], e)
            self.next_heartbeat = now + min(1.0, self.settings.heartbeat_interval)
            return
        if status is Beat.CANCEL and self.stop_reason is None:
            self._begin_stop(RunState.CANCELLED, "cancelled by request", now)
        elif status is Beat.LOST and self.stop_reason is None:
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
        result = self.report.parsed()
        if result is None:
            how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
            message = f"the flow process ended without reporting a result ({how})"
            return Outcome(RunState.FAILED, exit_code=code, error_type="ProcessExit", error=message, lost=lost)
        limits = self.settings
        if result.get("ok"):
            text, too_big = capped_result(result["result"], limits.result_max_bytes) if "result" in result else (None, None)
            return Outcome(RunState.COMPLETED, exit_code=code, result=text,
                           result_error=capped_text(too_big or result.get("result_error"), limits.error_max_bytes, "ERROR"),
                           lost=lost)
        return Outcome(
            RunState.FAILED,
            exit_code=code,
            error_type=capped_text(result.get("error_type"), 1024, "ERROR"),
            error=capped_text(result.get("error"), limits.error_max_bytes, "ERROR", result.get("error_bytes")),
            lost=lost,
        )
