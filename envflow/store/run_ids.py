"""The shape of a run id, checked wherever one comes from outside: job payloads, the CLI, the API.

A run id is 32 lowercase hex characters (a UUID4's hex). Everything that builds a Redis key
from an id given by someone else checks it here first, so ``<id>:out`` or ``*`` can never
name another key.
"""

from __future__ import annotations

import re
import uuid

MIN_PREFIX = 4
_ID = re.compile(r"[0-9a-f]{32}")
_PREFIX = re.compile(r"[0-9a-f]{4,32}")


def new_run_id() -> str:
    return uuid.uuid4().hex


def is_run_id(value: object) -> bool:
    """Whether ``value`` is a whole run id."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def is_run_id_prefix(value: str) -> bool:
    """Whether ``value`` can be the start of a run id, long enough to look one up."""
    return _PREFIX.fullmatch(value) is not None
