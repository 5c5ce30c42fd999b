"""The run form: one field per flow parameter, read as the CLI reads ``--param`` values.

A field holds text: it becomes the parameter's JSON reading when its type accepts that, else the
text itself (``3`` for ``n: int``, ``"3"`` for ``name: str``), exactly as ``--param n=3`` does
(``TextParameter``). A field left empty, or left at the deployment's own value, is not sent, so
the deployment's parameters apply. ``More parameters (JSON)`` takes an object, for flows with
``**kwargs``; fields win over it, as ``--param`` wins over ``--params-json``. The parameters are
then checked by ``Client.run``, the one check every client goes through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import ParameterError
from ..models import DeploymentRecord
from ..parameters import TextParameter, json_object

FIELD_PREFIX = "p:"
NAMED_KINDS = ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")


@dataclass(frozen=True)
class Field:
    """One parameter's input: its name, type text, whether required, and the text it starts with."""

    name: str
    annotation: str
    required: bool
    initial: str
    default: str = ""  # the flow's own default, as its signature shows it (the field's placeholder)


def field_text(value: Any) -> str:
    """A deployment value as the field shows it: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def fields(record: DeploymentRecord) -> list[Field]:
    named = [p for p in record.parameter_spec if p["kind"] in NAMED_KINDS]
    known = {p["name"] for p in named}
    out = [Field(p["name"], p.get("annotation", ""), bool(p["required"]) and p["name"] not in record.parameters,
                 field_text(record.parameters[p["name"]]) if p["name"] in record.parameters else "",
                 str(p.get("default", ""))) for p in named]
    # Deployment parameters the signature does not name (a flow taking **kwargs) get fields too.
    out += [Field(name, "", False, field_text(value)) for name, value in record.parameters.items() if name not in known]
    return out


def prefilled(parameters: dict[str, Any], timeout: float | None) -> dict[str, str]:
    """The form as a run with these parameters and timeout would have sent it (for "Rerun with changes")."""
    form = {FIELD_PREFIX + name: field_text(value) for name, value in parameters.items()}
    if timeout:
        form["timeout"] = f"{timeout:g}"
    return form


def takes_more(record: DeploymentRecord) -> bool:
    """Whether the flow accepts parameters beyond its named ones (``**kwargs``, or no signature stored)."""
    return not record.parameter_spec or any(p["kind"] == "VAR_KEYWORD" for p in record.parameter_spec)


def parameters(record: DeploymentRecord, form: dict[str, str]) -> dict[str, Any]:
    """The run's parameters from a submitted form (before ``Client.run`` checks them).

    :raises ParameterError: the JSON field is not a JSON object.
    """
    params: dict[str, Any] = {}
    extra = form.get("params_json", "").strip()
    if extra:
        params.update(json_object(extra, "more parameters"))
    for item in fields(record):
        text = form.get(FIELD_PREFIX + item.name, "")
        if text == "" or text == item.initial:
            continue
        params[item.name] = TextParameter(text)
    return params


def timeout(form: dict[str, str]) -> float | None:
    """The optional timeout field: seconds, more than 0.

    :raises ParameterError: not a positive number.
    """
    text = form.get("timeout", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"timeout: {text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ParameterError("timeout: give a number of seconds above 0")
    return value
