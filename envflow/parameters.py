"""Checking run parameters against a flow's signature, before anything is enqueued."""

from __future__ import annotations

import json
from typing import Any

from .errors import ParameterError


def ensure_json(value: Any, what: str) -> str:
    """``value`` as JSON text, or a ParameterError saying what is not serialisable.

    Strings must be valid text: a lone surrogate (``"\\ud800"``) is refused, as no process can
    print or store it as UTF-8.
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParameterError(f"{what} holds a lone surrogate (such as \\ud800), which is not valid text") from None
    except RecursionError:
        raise ParameterError(f"{what} is nested too deeply to be sent as JSON") from None
    except (TypeError, ValueError) as e:
        raise ParameterError(f"{what} must be JSON-serialisable: {e}") from None
    return text


def merge_parameters(
    spec: list[dict[str, Any]], defaults: dict[str, Any], overrides: dict[str, Any] | None, flow: str
) -> dict[str, Any]:
    """Deployment defaults updated with a run's parameters, checked against the flow's signature.

    :raises ParameterError: unknown or missing parameters, or values that are not JSON.
    """
    if overrides is not None and not isinstance(overrides, dict):
        raise ParameterError(f"parameters must be a mapping of names to values, got {type(overrides).__name__}")
    merged = {**defaults, **(overrides or {})}
    if spec:
        named = {p["name"] for p in spec if p["kind"] in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")}
        takes_any = any(p["kind"] == "VAR_KEYWORD" for p in spec)
        unknown = sorted(set(merged) - named)
        if unknown and not takes_any:
            accepted = ", ".join(sorted(named)) or "none"
            raise ParameterError(f"flow {flow!r} has no parameter {', '.join(unknown)} (it accepts: {accepted})")
        missing = [p["name"] for p in spec if p["required"] and p["name"] not in merged]
        if missing:
            raise ParameterError(f"flow {flow!r} needs parameter {', '.join(missing)}; pass it with the run")
        positional_only = [p["name"] for p in spec if p["kind"] == "POSITIONAL_ONLY" and p["required"]]
        if positional_only:
            raise ParameterError(f"flow {flow!r} has positional-only parameters ({', '.join(positional_only)})")
    for name, value in merged.items():
        ensure_json(value, f"parameter {name!r}")
    return merged
