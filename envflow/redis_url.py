"""The Redis URL of this process, read without building ``Settings``.

Commands that only read from Redis (``envflow run ls``) need nothing else from the configuration,
and importing pydantic-settings takes longer than the rest of such a command. This reads
``ENVFLOW_REDIS_URL`` and ``ENVFLOW_STATE_DIR`` as ``Settings`` does (names in any case; the same
defaults, which ``Settings`` takes from here) and completes the URL with the private Redis's
password the same way (``private_redis.completed_url``); a test holds both to the same answers.
"""

from __future__ import annotations

import os
from pathlib import Path

from .private_redis import completed_url

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_STATE_DIR = "~/.cache/envflow"


def _variable(name: str) -> str | None:
    """``ENVFLOW_<name>``, matched in any case (as pydantic-settings matches it: the last one wins)."""
    wanted, found = f"envflow_{name}".lower(), None
    for key, value in os.environ.items():
        if key.lower() == wanted:
            found = value
    return found


def given_redis_url() -> str | None:
    """``ENVFLOW_REDIS_URL`` as the user set it, or None when it is unset."""
    return _variable("redis_url")


def redis_url() -> str:
    """The effective ``ENVFLOW_REDIS_URL``, as ``Settings().redis_url`` has it."""
    url = _variable("redis_url")
    state_dir = _variable("state_dir")
    return completed_url(Path(DEFAULT_STATE_DIR if state_dir is None else state_dir).expanduser(),
                         DEFAULT_REDIS_URL if url is None else url, explicit=url is not None)
