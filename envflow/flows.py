"""The ``@flow`` decorator.

This module is stdlib-only and runs on CPython 3.8+: the worker loads it by path
inside flow environments that do not have envflow installed, so that a flow file's
``from envflow import flow`` works there. It imports nothing at module level: every
flow run pays for what it imports, so heavier modules (inspect) load only when used.
"""

import sys

FLOW_MARKER = "__envflow_flow__"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

# >0 while envflow imports a flow or deployment file; direct flow calls made at
# import time are skipped then, so a file ending in `my_flow()` is not run twice.
_loading = 0


def flow_name_for(function_name):
    """Flow name for a function name: ``my_flow`` -> ``my-flow``."""
    return function_name.replace("_", "-")


def valid_flow_name(name):
    """Whether ``name`` can name a flow (and so address its deployments as ``flow/deployment``)."""
    return bool(name) and name[0] not in "_.-" and set(name) <= _NAME_CHARS


class Flow:
    """A function marked as a flow. Calling it runs it here, in this interpreter."""

    def __init__(self, fn, name=None, description=None):
        if not callable(fn):
            raise TypeError("@flow decorates a function, got {!r}".format(fn))
        self.fn = fn
        self.name = name or flow_name_for(fn.__name__)
        if not valid_flow_name(self.name):
            raise ValueError(
                "invalid flow name {!r}: use letters, digits, '-', '_' and '.', starting with a letter or digit".format(
                    self.name
                )
            )
        self._description = description
        setattr(self, FLOW_MARKER, True)
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(fn, attr):
                setattr(self, attr, getattr(fn, attr))
        self.__wrapped__ = fn

    @property
    def description(self):
        if self._description is not None:
            return self._description
        import inspect

        return inspect.getdoc(self.fn) or ""

    def __call__(self, *args, **kwargs):
        if _loading:
            sys.stderr.write(
                "envflow: skipped the call to {}() made while its file was being loaded; "
                "guard it with `if __name__ == \"__main__\":`\n".format(self.fn.__name__)
            )
            return None
        return self.fn(*args, **kwargs)

    def __repr__(self):
        return "<Flow {!r} ({}.{})>".format(self.name, self.fn.__module__, self.fn.__qualname__)

    def parameter_spec(self):
        """The flow's parameters, as JSON-ready dicts (used to check run parameters)."""
        return parameter_spec(self.fn)


def parameter_spec(fn):
    """Name, kind, whether required, and the annotation's source text (see envflow/param_types.py)."""
    import inspect

    spec = []
    for param in inspect.signature(fn).parameters.values():
        item = {"name": param.name, "kind": param.kind.name}
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            item["required"] = False
        else:
            item["required"] = param.default is param.empty
            if param.default is not param.empty:  # its repr, cut as a signature line shows it
                text = repr(param.default)
                item["default"] = text if len(text) <= 40 else text[:37] + "..."
        if param.annotation is not param.empty:
            item["annotation"] = annotation_text(param.annotation)
        spec.append(item)
    return spec


def annotation_text(annotation):
    """An annotation as source text: ``int``, ``list[int]``, ``typing.Optional[str]``, ``mod.Class``.

    Strings (``from __future__ import annotations``) are kept as written; classes are named
    by their qualified name, builtins bare; typing constructs by their repr, which is their text.
    """
    if isinstance(annotation, str):
        return annotation
    text = repr(annotation)
    if text.startswith("<class '") and text.endswith("'>"):
        text = text[len("<class '"):-2]
        if text.startswith("builtins."):
            text = text[len("builtins."):]
    return text


def flow(fn=None, name=None, description=None):
    """Mark a function as a flow.

    Use as ``@flow`` or ``@flow(name="other-name")``. The flow's name defaults to the
    function's name with ``_`` replaced by ``-``.

    :param name: the flow's name, used to address deployments (``flow-name/deployment``).
    :param description: shown by ``envflow deployment inspect``; defaults to the docstring.
    """
    if fn is None:
        return lambda f: Flow(f, name=name, description=description)
    return Flow(fn, name=name, description=description)


def is_flow(obj):
    """True for flows, whichever copy of envflow made them."""
    return getattr(obj, FLOW_MARKER, False) is True and hasattr(obj, "fn")


class loading:  # noqa: N801 - used like a function: `with loading():`
    """Skip direct flow calls while a flow or deployment file is imported."""

    def __enter__(self):
        global _loading
        _loading += 1
        return self

    def __exit__(self, *exc):
        global _loading
        _loading -= 1
        return False
