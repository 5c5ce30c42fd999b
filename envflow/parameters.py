"""Checking run parameters against a flow's signature and annotations, before anything is enqueued."""

from __future__ import annotations

import json
from typing import Any

from .errors import ParameterError
from .param_types import annotation_of, coerce


class TextParameter(str):
    """A value typed on a command line (``--param key=value``).

    An annotated parameter takes the value's JSON reading when its type accepts that, else the
    text itself (``name=3`` is ``"3"`` for ``name: str``, ``3`` for ``n: int``); an unannotated
    one takes the JSON reading when there is one, else the text.
    """

    candidates: tuple[Any, ...]

    def __new__(cls, text: str) -> TextParameter:
        self = super().__new__(cls, text)
        try:
            self.candidates = (json.loads(text), str(text))
        except ValueError:
            self.candidates = (str(text),)
        except RecursionError:
            raise ParameterError(f"the value {text[:20]}... is nested too deeply") from None
        return self


def json_object(text: str, what: str) -> dict[str, Any]:
    """``text`` as a JSON object of parameters; ``what`` names where it came from in the error."""
    try:
        loaded = json.loads(text)
    except ValueError as e:
        raise ParameterError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise ParameterError(f"{what} is nested too deeply") from None
    if not isinstance(loaded, dict):
        raise ParameterError(f'{what} must be a JSON object, e.g. {{"name": "Ada"}}')
    return loaded


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
    """Deployment defaults updated with a run's parameters, checked against the flow's signature,
    and coerced to its annotations (``"3"`` becomes ``3`` for ``n: int``).

    :raises ParameterError: unknown or missing parameters, values their annotation refuses, or
        values that are not JSON.
    """
    if overrides is not None and not isinstance(overrides, dict):
        raise ParameterError(f"parameters must be a mapping of names to values, got {type(overrides).__name__}")
    merged = {**defaults, **(overrides or {})}
    problems: list[str] = []  # every one of them at once, not the first only
    named = {p["name"] for p in spec if p["kind"] in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")}
    takes_any = any(p["kind"] == "VAR_KEYWORD" for p in spec)
    unknown = sorted(set(merged) - named)
    if unknown and not takes_any:  # a flow without parameters takes none
        accepted = ", ".join(sorted(named)) or "none"
        problems.append(f"has no parameter {', '.join(unknown)} (it accepts: {accepted})")
    missing = [p["name"] for p in spec if p["required"] and p["name"] not in merged
               and p["kind"] in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")]
    if missing:
        given = " ".join(f"-p {name}=…" for name in missing)
        problems.append(f"needs parameter {', '.join(missing)}; pass it with the run ({given})")
    positional_only = [p["name"] for p in spec if p["kind"] == "POSITIONAL_ONLY" and p["required"]]
    if positional_only:
        problems.append(f"has positional-only parameters ({', '.join(positional_only)})")
    known = {k: v for k, v in merged.items() if k not in unknown or takes_any}
    try:
        checked = check_types(spec, known, flow)
    except ParameterError as e:
        problems.append(str(e).removeprefix(f"flow {flow!r}: ").removeprefix(f"flow {flow!r} "))
        checked = {}
    if problems:
        raise ParameterError(problem_text(flow, problems))
    return checked


def problem_text(flow: str, problems: list[str]) -> str:
    """One line for every problem of a run's parameters: ``flow 'f' needs ...; parameter 'n' expects ...``."""
    verb = problems[0].startswith(("has ", "needs "))
    return f"flow {flow!r}{' ' if verb else ': '}" + "; ".join(problems)


def check_types(spec: list[dict[str, Any]], parameters: dict[str, Any], flow: str) -> dict[str, Any]:
    """``parameters`` coerced to the flow's annotations (unannotated ones as they are), each checked to be JSON.

    :raises ParameterError: a value its annotation refuses (naming the parameter and the type), or not JSON.
    """
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in parameters.items():
        candidates = value.candidates if isinstance(value, TextParameter) else (value,)
        annotation = annotation_of(spec, name)
        coerced, problem = coerce(annotation, candidates)
        if problem is not None:
            shown = json.dumps(candidates[-1], default=repr)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            problems.append(f"parameter {name!r} expects {annotation}, got {shown}: {problem}")
            continue
        try:
            ensure_json(coerced, f"parameter {name!r}")
        except ParameterError as e:
            problems.append(str(e))
            continue
        out[name] = coerced
    if problems:
        raise ParameterError(problem_text(flow, problems))
    return out
