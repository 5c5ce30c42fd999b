"""A webhook's JSON body: ``{"type": "run.failed", "timestamp", "data": {...}}`` (docs/hooks.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from ..models import DeploymentRecord, RunRecord
from ..redaction import MASK, Redactor


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO-8601 in UTC, to the millisecond."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redact_value(redactor: Redactor, name: str, value: Any) -> Any:
    """A parameter as a payload shows it: hidden whole under a secret-looking name, URL credentials hidden
    in text, nested values alike."""
    if redactor.is_secret_name(name):
        return MASK
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, dict):
        return {k: redact_value(redactor, str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(redactor, name, v) for v in value]
    return value


def body(event: str, at: float, run: RunRecord, deployment: DeploymentRecord | None, redactor: Redactor,
         ui_url: str | None) -> str:
    """The body of the webhook for ``event`` (a final state or ``LATE``) of ``run``, as sent (JSON text)."""
    last = run.attempts[-1] if run.attempts else None
    error = f"{run.error_type + ': ' if run.error_type else ''}{run.error or ''}" or None
    retries = deployment.retries if deployment is not None else run.retries
    data = {
        "run_id": run.id,
        "deployment": run.deployment,
        "state": event,
        "attempt": run.attempt,
        "attempts": 1 + retries,
        "error": redactor.text(error) if error else None,
        "created_at": iso(run.created_at),
        "started_at": iso(last.started_at if last else None),
        "ended_at": iso(run.updated_at if run.state.is_final else None),
        "worker": run.worker,
        "parameters": {k: redact_value(redactor, k, v) for k, v in run.parameters.items()},
        "url": f"{ui_url.rstrip('/')}/runs/{run.id}" if ui_url else None,
    }
    return json.dumps({"type": f"run.{event.lower()}", "timestamp": iso(at), "data": data}, separators=(",", ":"))
