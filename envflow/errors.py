"""envflow's one exception tree.

Every error a user can cause is an :class:`EnvflowError` whose message says what
was wrong and what to do; the CLI prints it in a line or two, never a traceback.
Redis errors are wrapped at the boundary as :class:`QueueError`.
"""

from __future__ import annotations

from typing import Any


class EnvflowError(Exception):
    """Base class of every error envflow raises on purpose."""


class EnvflowWarning(UserWarning):
    """Something a user should know that is not an error: a run waits for a worker with its env, say."""


class ConfigError(EnvflowError):
    """A setting or a deployment field is invalid."""


class ScheduleError(ConfigError, ValueError):
    """An invalid schedule (cron expression, timezone, interval). A ValueError too, so pydantic
    reports it per field when a deployment is validated."""


class DeploymentNotFound(EnvflowError):
    """No deployment is registered under the given name."""


class DeploymentFileError(EnvflowError):
    """A deployment file could not be loaded or holds invalid deployments."""


class ParameterError(EnvflowError):
    """Run parameters do not match the flow's signature or are not JSON."""


class RunNotFound(EnvflowError):
    """No run has the given id (or id prefix)."""


class LimitNotFound(EnvflowError):
    """No concurrency limit has the given name."""


class EnvNotFound(EnvflowError):
    """The environment a deployment names does not exist where the worker looks."""


class EnvActivationError(EnvflowError):
    """The environment exists but cannot be activated or run.

    :param shown: what a run's output says of it, where the output has said the rest already (a
        build's own output, say); the whole message otherwise.
    """

    def __init__(self, message: str, shown: str | None = None) -> None:
        super().__init__(message)
        self.shown = shown


class QueueError(EnvflowError):
    """Redis could not be reached or answered with an error."""


class RunTimeout(EnvflowError):
    """Waiting for a run took longer than the caller allowed; ``waiting``: why it had not started, if it had not."""

    def __init__(self, message: str, waiting: object = None) -> None:
        super().__init__(message)
        self.waiting = waiting  # an envflow.waits.Waiting, or None


class FlowFailed(EnvflowError):
    """A run ended in a state other than COMPLETED.

    :param run_id: the run's id.
    :param state: the run's final state.
    :param error_type: the exception type the flow raised, if it raised.
    :param error: the failure's message.
    """

    def __init__(self, run_id: str, state: str, error_type: str | None, error: str | None) -> None:
        self.run_id = run_id
        self.state = state
        self.error_type = error_type
        self.error = error
        detail = f"{error_type}: {error}" if error_type else (error or "no details recorded")
        super().__init__(f"run {run_id} ended {state}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.state, self.error_type, self.error))
