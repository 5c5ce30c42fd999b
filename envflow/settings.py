"""envflow's settings: one pydantic-settings class, read from ``ENVFLOW_*`` variables.

This is the only place that reads configuration from the process environment, with
``redis_url.py``: the two settings a command that only reads from Redis needs, read without this
class (pydantic-settings), from the defaults defined there.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError
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
        description="Redis URL: redis://, rediss:// for TLS, unix://, or redis+sentinel://host:port[,host:port...]"
        "/SERVICE[/DB] for the primary Sentinel names; credentials go in the URL.",
    )
    redis_wait_replicas: int | None = Field(
        None, ge=0, description="Replicas that must have a new run before Client.run() returns it (WAIT); "
        "default: 1 behind Sentinel when the primary has a replica, else 0.",
    )
    redis_wait_timeout: float = Field(
        1.0, gt=0, description="Seconds a new run waits for its replicas; past it the run is returned with a warning.",
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
    result_max_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="A run's result (as JSON) over this is not stored; the run says why."
    )
    error_max_bytes: int = Field(
        64 * 1024, ge=1024, description="A run's error text is cut to this, with a note saying how long it was."
    )
    parameters_max_bytes: int = Field(
        1024 * 1024, ge=1024, description="Runs whose parameters (as JSON, defaults included) are bigger are refused."
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
        30.0, gt=0, description="Seconds a run waits, once every live worker of its queue lacks its env, before it "
        "FAILs with their error; 'forever' waits (a fleet that adds workers on demand).",
    )
    warm_idle: float = Field(300.0, ge=0, description="Seconds an env stays warm on a worker after its last run.")
    warm_max: int = Field(4, ge=0, description="Ready processes a worker keeps at most (0: no warm pool).")
    flow_sandbox: bool = Field(
        True, description="Confine flows with Landlock (see README Security); false leaves the state dir, "
        "built envs and other processes open to flows."
    )
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
    ui_session_ttl: int = Field(12 * 3600, ge=1, description="Seconds a web UI login lasts (logging out ends it sooner).")
    ui_page_lines: int = Field(
        5000, ge=100, le=1_000_000, description="Output lines a run's page keeps; older ones are offered as a download."
    )
    ui_max_streams: int = Field(64, ge=1, description="Live output streams the web UI serves at once.")
    ui_url: str | None = Field(None, description="The web UI's address as others reach it: hook payloads link "
                               "to a run's page there.")
    webhook_secret: str = Field("", description="Key that signs hooks' webhooks, as whsec_<base64> (Standard "
                                "Webhooks); without one they go unsigned.")
    webhook_retry_for: float = Field(24 * 3600, gt=0, description="Seconds a failing webhook is retried before it "
                                     "goes to the dead-letter list.")
    webhook_retry_delays: str = Field("1,5,30,120,600,3600", description="','-separated seconds between a "
                                      "webhook's tries (jittered; the last repeats).")
    webhook_claim_idle: float = Field(60.0, gt=0, description="Seconds a deliverer holds a hook event or delivery "
                                      "before another may take it over (it died, say).")
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds one webhook request may take.")
    webhook_concurrency: int = Field(4, ge=1, description="Webhook requests a deliverer makes at once.")

    @field_validator("webhook_retry_delays")
    @classmethod
    def _check_delays(cls, value: str) -> str:
        try:
            delays = [float(d) for d in value.split(",") if d.strip()]
        except ValueError:
            raise ValueError("give ','-separated seconds, such as 1,5,30") from None
        if not delays or min(delays) < 0:
            raise ValueError("give ','-separated seconds (at least one, none negative), such as 1,5,30")
        return value

    @property
    def retry_delays(self) -> list[float]:
        """The seconds between a webhook's tries, the last repeating."""
        return [float(d) for d in self.webhook_retry_delays.split(",") if d.strip()]

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:  # one line naming the variable, not pydantic's report
            raise ConfigError(invalid_setting(e)) from None

    @field_validator("env_wait", mode="before")
    @classmethod
    def _forever(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("forever", "none", "") else value

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
                value = MASK if value not in ("", None) else value  # an unset secret shows as unset
            elif isinstance(value, str):
                value = self.redactor.text(value)
            values[name] = value
        return values


def invalid_setting(error: ValidationError) -> str:
    """The first invalid setting, as its variable, its value and what is wrong, in one line."""
    first = error.errors()[0]
    name = "ENVFLOW_" + "_".join(str(p) for p in first["loc"]).upper() if first["loc"] else "an ENVFLOW_* setting"
    value = str(first.get("input", ""))[:80]
    shown = MASK if Redactor(DEFAULT_SECRET_PATTERNS).is_secret_name(name) else repr(value)
    return f"{name}={shown} is invalid: {first['msg'].removeprefix('Value error, ')}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


__all__ = ["Settings", "get_settings", "redact_url", "DEFAULT_SECRET_PATTERNS"]
