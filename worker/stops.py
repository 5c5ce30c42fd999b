"""What stops a running attempt: a cancel, the worker's shutdown, or its deadline."""

from __future__ import annotations

import os
import threading
import time


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

    def force_shutdown(self, grace: float) -> None:
        """Stop the running flow now: as if the shutdown grace had passed."""
        self.shutdown_at = time.monotonic() - grace
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


class Deadline:
    """A run's timeout: the configured seconds, and when they are up (monotonic), from the attempt's start."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def passed(self, now: float | None = None) -> bool:
        return self.at is not None and (time.monotonic() if now is None else now) >= self.at

    def describe(self) -> str:
        return f"timed out after {self.seconds:g}s"
