"""A flow parameter's annotation: stored as source text, turned into a type without ``eval``,
and used to check and coerce run parameters with pydantic.

A deployment stores each annotation as the text it was written as (``"int"``,
``"list[int]"``, ``"Optional[str]"``, ``"int | None"``; ``flowfile.py`` unparses it from the
flow file's syntax tree, ``flows.py`` writes it from the live function). The client reads
that text back with a small interpreter of its syntax tree, never with ``eval``, since a
deployment record comes from Redis: it knows the builtin types, ``typing``'s generics and
``Literal``, ``date``/``datetime``/``time``/``timedelta``, ``Decimal``, ``UUID`` and ``Path``
(bare or module-qualified). Any other name (a class of the flow's own, an import) is
unchecked, as if unannotated: ``list[MyModel]`` checks that the value is a list.

Values are validated in pydantic's lax mode (``"3"`` becomes ``3`` for ``int``) and stored as
their JSON form, which is what the flow receives.
"""

from __future__ import annotations

import ast
import datetime
import decimal
import json
import pathlib
import typing
import uuid
from functools import lru_cache
from typing import Any

MAX_ANNOTATION_CHARS = 500

_TYPES: dict[str, Any] = {
    "int": int, "float": float, "str": str, "bool": bool, "bytes": bytes, "complex": complex,
    "NoneType": type(None), "object": Any, "Any": Any,
    "date": datetime.date, "datetime": datetime.datetime, "time": datetime.time, "timedelta": datetime.timedelta,
    "Decimal": decimal.Decimal, "UUID": uuid.UUID, "Path": pathlib.Path,
}
# Generics, usable bare (``list``) or with arguments (``list[int]``).
_CONTAINERS: dict[str, Any] = {
    "list": list, "dict": dict, "tuple": tuple, "set": set, "frozenset": frozenset,
    "List": typing.List, "Dict": typing.Dict, "Tuple": typing.Tuple, "Set": typing.Set,  # noqa: UP006
    "FrozenSet": typing.FrozenSet, "Sequence": typing.Sequence, "Mapping": typing.Mapping,  # noqa: UP006
    "MutableMapping": typing.MutableMapping, "MutableSequence": typing.MutableSequence,
    "Iterable": typing.Iterable, "Collection": typing.Collection,
}
# Only with arguments.
_FORMS: dict[str, Any] = {"Optional": typing.Optional, "Union": typing.Union}
# Module prefixes under which the names above are accepted too (``typing.List``, ``datetime.date``).
_MODULES = ("typing", "typing_extensions", "collections.abc", "datetime", "decimal", "uuid", "pathlib", "builtins")


class _Unknown(Exception):
    """The annotation uses something this interpreter does not know: leave the value unchecked."""


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _Unknown


def _name(node: ast.expr) -> str:
    """The known short name a Name/Attribute node refers to (``typing.List`` -> ``List``)."""
    dotted = _dotted(node)
    module, _, short = dotted.rpartition(".")
    if module and module not in _MODULES:
        raise _Unknown
    return short


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool, bytes, type(None))):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, (int, float))):
        return -node.operand.value
    raise _Unknown


def _type(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return type(None)
        if isinstance(node.value, str):  # a quoted (forward) reference
            return _type(ast.parse(node.value, mode="eval").body)
        raise _Unknown
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return typing.Union[_type(node.left), _type(node.right)]  # noqa: UP007
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = _name(node)
        known = _TYPES.get(name) or _CONTAINERS.get(name)
        if known is None:
            raise _Unknown
        return known
    if isinstance(node, ast.Subscript):
        name = _name(node.value)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if name == "Literal":
            return typing.Literal[tuple(_literal(i) for i in items)]
        if name == "Annotated":
            return _type(items[0])
        generic = _CONTAINERS.get(name) or _FORMS.get(name)
        if generic is None:
            raise _Unknown
        args = tuple(... if isinstance(i, ast.Constant) and i.value is ... else _arg(i) for i in items)
        return generic[args if len(args) > 1 else args[0]]
    raise _Unknown


def _arg(node: ast.expr) -> Any:
    """A generic's argument: unknown ones are unchecked (``list[MyModel]`` is a list of anything)."""
    try:
        return _type(node)
    except _Unknown:
        return Any


@lru_cache(maxsize=512)
def _adapter(annotation: str) -> Any:
    """A pydantic TypeAdapter for the annotation, or None when it leaves values unchecked."""
    from pydantic import TypeAdapter

    if len(annotation) > MAX_ANNOTATION_CHARS:
        return None
    try:
        tp = _type(ast.parse(annotation, mode="eval").body)
        return None if tp is Any else TypeAdapter(tp)
    except Exception:  # unknown names, bad syntax, a schema pydantic cannot build: unchecked
        return None


def coerce(annotation: str | None, candidates: tuple[Any, ...]) -> tuple[Any, str | None]:
    """The JSON form of the first candidate value the annotation accepts.

    :param candidates: the value, or for text typed on a command line its JSON reading then the text itself.
    :returns: ``(value, None)``, or ``(None, why)`` when no candidate is accepted (why the first was not).
    """
    adapter = _adapter(annotation) if annotation else None
    if adapter is None:
        return candidates[0], None
    from pydantic import ValidationError

    first_problem = None
    for value in candidates:
        try:
            return adapter.dump_python(adapter.validate_python(value), mode="json"), None
        except ValidationError as e:
            first_problem = first_problem or _describe(e)
        except RecursionError:
            first_problem = first_problem or "it is nested too deeply"
    return None, first_problem


def _describe(error: Any) -> str:
    items = error.errors(include_url=False)
    item = items[0]
    where = "".join(f"[{json.dumps(p)}]" for p in item["loc"])
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"{'at ' + where + ': ' if where else ''}{item['msg']}{more}"


def annotation_of(spec: list[dict[str, Any]], name: str) -> str | None:
    """The annotation a value given as ``name`` is checked against (``**kwargs: T`` for extra names)."""
    for p in spec:
        if p["name"] == name and p["kind"] in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"):
            return p.get("annotation")
    return next((p.get("annotation") for p in spec if p["kind"] == "VAR_KEYWORD"), None)
