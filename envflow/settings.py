"""envflow's settings: one pydantic-settings class, read from ``ENVFLOW_*`` variables.

This is the only place that reads configuration from the process environment, with
``redis_url.py``: the two settings a command that only reads from Redis needs, read without this
class (pydantic-settings), from the defaults defined there.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .private_redis import completed_url
from .redaction import DEFAULT_SECRET_PATTERNS, MASK, Redactor, redact_url
from .redis_url import DEFAULT_REDIS_URL, DEFAULT_STATE_DIR

# Settings whose names look secret but whose values are not (the patterns themselves).
NOT_SECRET = frozenset({"secret_patterns"})


class Settings(BaseSettings):
    """Effective configuration of an envflow process (client, worker or scheduler)."""

    model_config = SettingsConfigDict(env_prefix="ENVFLOW_", extra="ignore")

    redis_url: str = Field(
        DEFAULT_REDIS_URL,
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
    env_wait: float | None = Field(
        None, gt=0, description="Seconds a run waits for a worker that has its env before it FAILs (default: forever)."
    )
    warm_idle: float = Field(300.0, ge=0, description="Seconds an env stays warm on a worker after its last run.")
    warm_max: int = Field(4, ge=0, description="Ready processes a worker keeps at most (0: no warm pool).")
    pass_env: str = Field(
        "",
        description="','-separated names (globs allowed) of the worker's own variables that flows also get, "
        "beyond the default set (PATH, HOME, locale, conda's, ...).",
    )
    state_dir: Path = Field(
        Path(DEFAULT_STATE_DIR), description="Worker-local state: flow source cache, worker name locks."
    )
    log_level: str = Field("INFO", description="Log level of the worker and scheduler.")
    env_cache: Path | None = Field(
        None, description="Where workers keep the envs they build from requirements (default: <state dir>/envs); "
        "worker replicas of one host may share it."
    )
    env_cache_max_bytes: int = Field(
        20 * 1024**3, ge=0, description="Built envs beyond this total size are evicted, least recently used first."
    )
    pip_index_url: str | None = Field(None, description="The package index built envs install from (default: uv's).")
    pip_extra_index_url: str | None = Field(None, description="More package indexes (space-separated).")
    pip_find_links: str | None = Field(None, description="Directories or pages of wheels (space-separated).")
    pip_no_index: bool = Field(False, description="Ignore every index: install from ENVFLOW_PIP_FIND_LINKS only.")
    ui_host: str = Field(
        "127.0.0.1", description="Address `envflow ui` binds; anything but loopback needs ENVFLOW_UI_TOKEN."
    )
    ui_port: int = Field(8080, ge=1, le=65535, description="Port `envflow ui` listens on.")
    ui_token: str = Field(
        "",
        description="Token the web UI asks for, and /metrics takes as a Bearer token (16+ characters); "
        "without one the UI serves loopback only.",
    )
    ui_page_lines: int = Field(
        5000, ge=100, le=1_000_000, description="Output lines a run's page keeps; older ones are offered as a download."
    )
    ui_max_streams: int = Field(64, ge=1, description="Live output streams the web UI serves at once.")

    @field_validator("state_dir")
    @classmethod
    def _expand_state_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def env_cache_dir(self) -> Path:
        """Where built envs live: ``ENVFLOW_ENV_CACHE``, else ``<state dir>/envs``."""
        return (self.env_cache or self.state_dir / "envs").expanduser()

    @model_validator(mode="after")
    def _default_env_cache(self) -> Settings:
        if self.env_cache is None:  # shown by `envflow config` as the directory it is
            self.env_cache = self.state_dir / "envs"
        return self

    @model_validator(mode="after")
    def _private_redis_password(self) -> Settings:
        # The password `envflow up` generated for its private Redis (see envflow/private_redis.py);
        # without ENVFLOW_REDIS_URL, that Redis wherever it listens.
        self.redis_url = completed_url(self.state_dir, self.redis_url, explicit="redis_url" in self.model_fields_set)
        return self

    @cached_property
    def redactor(self) -> Redactor:
        """How this process shows values: ``ENVFLOW_SECRET_PATTERNS`` plus URL credentials."""
        return Redactor(self.secret_patterns)

    def is_secret_name(self, name: str) -> bool:
        """Whether a variable's value should be redacted wherever envflow shows it."""
        return self.redactor.is_secret_name(name)

    def redacted(self) -> dict[str, object]:
        """Effective values, with passwords in URLs and secret-looking values hidden."""
        values: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, Path):
                value = str(value)
            if name not in NOT_SECRET and self.is_secret_name(name):
                value = MASK
            elif isinstance(value, str):
                value = self.redactor.text(value)
            values[name] = value
        return values


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


__all__ = ["Settings", "get_settings", "redact_url", "DEFAULT_SECRET_PATTERNS"]
