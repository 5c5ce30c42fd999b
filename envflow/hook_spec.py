"""What a hook is: the events it fires on and its one action (a webhook, or a run of another deployment).

A deployment's ``hooks`` and the site-wide hooks (``envflow hook add``) share this model; how events are
written and delivered is ``envflow/hooks/``'s. YAML's ``on:`` key arrives from PyYAML (YAML 1.1) as the
boolean ``True``: it is taken as written, as GitHub Actions' workflow files take it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .redaction import redact_text
from .states import FINAL_STATES, RunState

LATE = "LATE"  # an event, not a state: the run has waited ``late_after`` seconds and goes on waiting
# The events a hook may name, in the order shown in messages.
HOOK_EVENTS = tuple([s.value for s in RunState if s in FINAL_STATES] + [LATE])
_DEPLOYMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_webhook_url(url: str) -> str:
    """``url`` if it is an absolute ``http``/``https`` URL with a host.

    :raises ValueError: any other scheme, or no host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook must be an http:// or https:// URL with a host, got {redact_text(url)!r}")
    return url


def parse_events(value: Any) -> list[str]:
    """Hook events from a list or a ``,``-separated string, upper-cased and checked."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"on: give a list of events from {', '.join(HOOK_EVENTS)}")
    events = []
    for item in items:
        name = str(item).strip().upper()
        if name not in HOOK_EVENTS:
            raise ValueError(f"on: {item!r} is not an event; use {', '.join(HOOK_EVENTS)}")
        if name not in events:
            events.append(name)
    return events


class Hook(BaseModel):
    """One hook: ``on`` (events) and exactly one action, ``webhook`` (a URL) or ``run`` (``flow/deployment``,
    with ``parameters``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    on: list[str]
    webhook: str | None = None
    run: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)  # site-wide hooks only: deployments with one of these tags

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and True in data:  # PyYAML reads the key `on` as the boolean True
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("on", mode="before")
    @classmethod
    def _check_on(cls, value: Any) -> list[str]:
        return parse_events(value)

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        return value if value is None else check_webhook_url(value)

    @field_validator("run")
    @classmethod
    def _check_run(cls, value: str | None) -> str | None:
        if value is not None and not _DEPLOYMENT_RE.match(value):
            raise ValueError(f"run: name a deployment as flow-name/deployment-name, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> Hook:
        if (self.webhook is None) == (self.run is None):
            raise ValueError("a hook takes one action: webhook: URL or run: flow-name/deployment-name")
        if self.parameters and self.run is None:
            raise ValueError("parameters go with run:, not with webhook:")
        return self

    def fires_on(self, event: str, deployment_tags: list[str] | None = None) -> bool:
        """Whether this hook wants ``event`` of a run of a deployment with ``deployment_tags``."""
        if event not in self.on:
            return False
        return not self.tags or bool(set(self.tags) & set(deployment_tags or ()))

    def target(self) -> str:
        """What the hook does, as listings show it (the URL's credentials are the caller's to redact)."""
        return f"webhook {self.webhook}" if self.webhook else f"run {self.run}"


def hooked_events(hooks: list[Hook]) -> str:
    """The events any of ``hooks`` fires on, as a run record keeps them for the transition scripts:
    ``|COMPLETED|FAILED|`` (empty without hooks)."""
    events = sorted({e for h in hooks for e in h.on})
    return f"|{'|'.join(events)}|" if events else ""


def started_by_text(started_by: str) -> str:
    """``started by run 1a2b3c4d's COMPLETED hook``, from a run's ``started_by`` (``<run id>:<event>``)."""
    origin, _, event = started_by.partition(":")
    return f"started by run {origin[:8]}'s {event} hook"


__all__ = ["HOOK_EVENTS", "LATE", "Hook", "check_webhook_url", "hooked_events", "parse_events", "started_by_text"]
