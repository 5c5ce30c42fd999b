"""``FlowRun``: a handle on one run, to follow its output, wait for it and get its result."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .connection import wrap_errors
from .errors import EnvflowError, FlowFailed, RunTimeout
from .output import AttemptEnd, OutputFollower, OutputLine, Record, ends_with_attempt_end
from .states import RunState
from .waits import Waiting

if TYPE_CHECKING:
    from .models import RunRecord
    from .store.runs import RunStore


class FlowRun:
    """A run of a deployment. Get one from ``Client.run()`` or ``Client.get_run()``."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.id = run_id
        self.waiting: str | None = None  # at submit: why it waits (no live worker has its env)

    def __repr__(self) -> str:
        return f"FlowRun({self.id!r})"

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def state(self) -> RunState:
        """The run's current state, read from Redis."""
        return self.record().state

    def record(self) -> RunRecord:
        """The full run record: state history, attempts, result, error."""
        return self.store.get(self.id)

    def _follower(self, on_idle: Callable[[], bool] | None = None) -> OutputFollower:
        def idle() -> bool:
            return (on_idle is not None and on_idle()) or self._check_alive()

        return OutputFollower(
            self.store.redis,
            self.id,
            on_idle=idle,
            idle_interval=max(self.store.settings.heartbeat_interval, 0.5),
        )

    def records(
        self,
        timeout: float | None = None,
        *,
        after: tuple[int, int] | None = None,
        on_idle: Callable[[], bool] | None = None,
    ) -> Iterator[Record | Waiting]:
        """Every output entry and attempt end, in order, from the start until the run ends; between them, while
        it waits, a :class:`~envflow.waits.Waiting` each time the reason it waits is new.

        :param after: resume after the record with this ``(attempt, seq)`` (a reader that reconnects).
        :param on_idle: also called while the output is quiet (every heartbeat interval); returning True
            stops the iteration once the history is read, raising stops it at once.
        """
        return self._follower(on_idle).records(timeout, after)

    def follow(self, timeout: float | None = None) -> Iterator[OutputLine]:
        """Yield the run's output lines (stdout and stderr, each tagged) until the run ends. While it waits,
        why nothing can take it (each reason once, as it becomes known) comes as a line of stream ``envflow``;
        a place in a queue does not (``records()`` has it).

        Replays what was already printed, then streams live. Every caller sees the same lines
        in the same order, whenever it starts following.

        :param timeout: stop following after this many seconds (the run goes on).
        """
        return self._follower().lines(timeout)

    def wait(self, timeout: float | None = None) -> RunState:
        """Block until the run ends and return its final state.

        :raises RunTimeout: the run did not end within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for record in self.records(timeout):
            if isinstance(record, AttemptEnd) and record.final:
                return RunState(record.state)
        current = self.record()
        state = current.state
        if state.is_final:
            return state
        if deadline is not None and time.monotonic() >= deadline:
            waiting = self.record().waiting if state is RunState.PENDING else None
            why = f"; {waiting.message}" if waiting else ""
            raise RunTimeout(f"run {self.id} did not end within {timeout:g}s (it is {state.value}{why})",
                             waiting=waiting)
        raise EnvflowError(f"run {self.id} stopped reporting before it ended (it is {state.value})")

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run and return the flow's return value.

        :raises FlowFailed: the run did not complete; carries its state, error type and message.
        """
        self.wait(timeout)
        record = self.record()
        if record.state is not RunState.COMPLETED:
            raise FlowFailed(record.id, record.state.value, record.error_type, record.error or record.reason)
        if record.result_error:
            raise EnvflowError(record.result_error)
        return record.result

    def cancel(self, reason: str = "cancelled by request") -> str:
        """Cancel this run (see ``Client.cancel``)."""
        with wrap_errors(self.store.redis):
            return self.store.cancel(self.id, reason)

    def _check_alive(self) -> bool:
        """Called when the output goes quiet: reap the run if its worker died; True if it has ended
        without an end record for the follower to read."""
        state = self.store.reap_if_lost(self.id)
        return state is None or state.is_final and not ends_with_attempt_end(self.store.redis, self.id)
