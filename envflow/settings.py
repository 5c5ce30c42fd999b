"""envflow's settings: one pydantic-settings class, read from ``ENVFLOW_*`` variables.

This is the only place that reads configuration from the process environment.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_PATTERNS = "*TOKEN*,*PASSWORD*,*PASSWD*,*SECRET*,*KEY*,*CREDENTIAL*"


class Settings(BaseSettings):
    """Effective configuration of an envflow process (client, worker or scheduler)."""

    model_config = SettingsConfigDict(env_prefix="ENVFLOW_", extra="ignore")

    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis (or rediss:// for TLS) URL; credentials go in the URL.",
    )
    queue: str = Field("default", description="Queue that deployments use when they name none.")
    conda_root: Path | None = Field(None, description="Conda root prefix, when CONDA_EXE/CONDA_ROOT do not say.")
    env_roots: str | None = Field(
        None,
        description="':'-separated directories flow environments may live in "
        "(default: conda root and envs dirs, /venvs, the worker's working directory).",
    )
    deployments: str | None = Field(None, description="Glob of deployment files the scheduler registers at start.")
    history_max_lines: int = Field(200_000, ge=100, description="Output lines kept per run.")
    history_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, description="Output bytes kept per run (the newest); also bounds the worker log's echo."
    )
    history_ttl: int = Field(7 * 24 * 3600, ge=60, description="Seconds a run's output history is kept.")
    run_ttl: int = Field(30 * 24 * 3600, ge=60, description="Seconds a finished run's record is kept.")
    lease_ttl: float = Field(20.0, gt=0, description="Seconds without a heartbeat after which a run is CRASHED.")
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between a worker's heartbeats.")
    reaper_interval: float = Field(5.0, gt=0, description="Seconds between scans for crashed runs.")
    cancel_grace: float = Field(10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a run is stopped.")
    shutdown_grace: float = Field(
        30.0, ge=0, description="Seconds a stopping worker lets its running flow finish before cancelling it."
    )
    activation_timeout: float = Field(30.0, gt=0, description="Seconds an env's activate.d scripts may take.")
    output_buffer_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, description="Output a worker buffers while Redis is unreachable."
    )
    max_line_bytes: int = Field(64 * 1024, ge=1024, description="Longer output lines are split into chunks this big.")
    secret_patterns: str = Field(
        DEFAULT_SECRET_PATTERNS, description="','-separated name globs whose values are redacted in output."
    )
    pass_env: str = Field(
        "",
        description="','-separated names (globs allowed) of the worker's own variables that flows also get, "
        "beyond the default set (PATH, HOME, locale, conda's, ...).",
    )
    state_dir: Path = Field(
        Path("~/.cache/envflow"), description="Worker-local state: flow source cache, worker name locks."
    )
    log_level: str = Field("INFO", description="Log level of the worker and scheduler.")

    @field_validator("state_dir")
    @classmethod
    def _expand_state_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def secret_globs(self) -> list[str]:
        return [p.strip().upper() for p in self.secret_patterns.split(",") if p.strip()]

    def is_secret_name(self, name: str) -> bool:
        """Whether a variable's value should be redacted wherever envflow shows it."""
        upper = name.upper()
        return any(fnmatch.fnmatchcase(upper, pattern) for pattern in self.secret_globs)

    def redacted(self) -> dict[str, object]:
        """Effective values, with the Redis password and secret-looking values hidden."""
        values: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if name == "redis_url":
                value = redact_url(str(value))
            elif self.is_secret_name(name):
                value = "***"
            values[name] = str(value) if isinstance(value, Path) else value
        return values


def redact_url(url: str) -> str:
    """Hide the password of a URL (``redis://user:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
