"""Reading flow files without running them: which flows a file defines, and their parameters.

The CLI and the client use this for deployments that point at a file (YAML deployments,
``flow_location=``), so registering a deployment does not need the flow's dependencies.
"""

from __future__ import annotations

import ast
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DeploymentFileError
from .flows import flow_name_for, valid_flow_name

# Bigger flow or deployment files are refused: far above any real one, and read in bounded memory.
MAX_SOURCE_BYTES = 16 * 1024 * 1024


@dataclass
class FlowInfo:
    name: str
    function: str
    line: int
    parameter_spec: list[dict[str, Any]] = field(default_factory=list)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    :raises FileNotFoundError: it is missing.
    :raises DeploymentFileError: it is not a regular file (``/dev/zero``, a FIFO, a directory),
        cannot be read or is bigger than ``limit``.
    """
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise DeploymentFileError(f"{what} {path} is not a regular file")
            data = f.read(limit + 1)  # a file growing as it is read stops here too
    except FileNotFoundError:
        raise
    except OSError as e:
        raise DeploymentFileError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise DeploymentFileError(f"{what} {path} is bigger than {limit:,} bytes; refused")
    return data


def read_source(path: Path) -> tuple[str, str]:
    """A flow file's text and its sha256 digest."""
    try:
        data = read_bounded(path, MAX_SOURCE_BYTES, "flow file")
    except FileNotFoundError:
        raise DeploymentFileError(f"flow file {path} does not exist") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DeploymentFileError(f"cannot read flow file {path}: {e}") from None
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


def _decorator_flow_name(decorator: ast.expr, function: str) -> str | None:
    """The flow name a decorator gives, or None when it is not ``@flow``."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    if name != "flow":
        return None
    if isinstance(decorator, ast.Call):
        for kw in decorator.keywords:
            if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                return kw.value.value
    return flow_name_for(function)


DEFAULT_TEXT_MAX = 40  # characters of a default's source text kept for `deployment inspect`


def default_text(text: str) -> str:
    """A default value's source text, cut to what a signature line shows."""
    return text if len(text) <= DEFAULT_TEXT_MAX else text[:DEFAULT_TEXT_MAX - 3] + "..."


def _param(arg: ast.arg, kind: str, required: bool, default: ast.expr | None = None) -> dict[str, Any]:
    """One parameter; its annotation and default as source text (see envflow/param_types.py)."""
    item: dict[str, Any] = {"name": arg.arg, "kind": kind, "required": required}
    if default is not None:
        item["default"] = default_text(ast.unparse(default))
    note = arg.annotation
    if isinstance(note, ast.Constant) and isinstance(note.value, str):
        item["annotation"] = note.value  # a quoted annotation: its text, as the live function gives it
    elif note is not None:
        item["annotation"] = ast.unparse(note)
    return item


def _parameter_spec(args: ast.arguments) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = []
    positional = args.posonlyargs + args.args
    first_default = len(positional) - len(args.defaults)
    for i, a in enumerate(positional):
        kind = "POSITIONAL_ONLY" if i < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        spec.append(_param(a, kind, i < first_default, args.defaults[i - first_default] if i >= first_default else None))
    if args.vararg:
        spec.append(_param(args.vararg, "VAR_POSITIONAL", False))
    for a, default in zip(args.kwonlyargs, args.kw_defaults):
        spec.append(_param(a, "KEYWORD_ONLY", default is None, default))
    if args.kwarg:
        spec.append(_param(args.kwarg, "VAR_KEYWORD", False))
    return spec


def flows_in_source(source: str, filename: str) -> list[FlowInfo]:
    """The ``@flow`` functions defined at the top level of a file."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        raise DeploymentFileError(f"{filename}:{e.lineno}: syntax error: {e.msg}") from None
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                name = _decorator_flow_name(decorator, node.name)
                if name and not valid_flow_name(name):
                    raise DeploymentFileError(f"{filename}:{decorator.lineno}: invalid flow name {name!r}: use letters, "
                                              "digits, '-', '_' and '.', starting with a letter or digit")
                if name:
                    found.append(FlowInfo(name, node.name, node.lineno, _parameter_spec(node.args)))
    return found


def pick_flow(flows: list[FlowInfo], wanted: str | None, filename: str) -> FlowInfo:
    """The flow a deployment means: ``wanted`` (a flow or function name) or the file's only flow."""
    if not flows:
        raise DeploymentFileError(f"{filename} defines no @flow function")
    if wanted is None:
        if len(flows) > 1:
            names = ", ".join(f.name for f in flows)
            raise DeploymentFileError(f"{filename} defines several flows ({names}); say which with flow_name")
        return flows[0]
    for info in flows:
        if wanted in (info.name, info.function):
            return info
    names = ", ".join(f.name for f in flows)
    raise DeploymentFileError(f"{filename} has no flow named {wanted!r}; it defines: {names}")
