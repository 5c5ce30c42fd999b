"""Keeping a credential-holding envflow process out of its user's other processes' reach."""

from __future__ import annotations


def make_undumpable() -> None:
    """PR_SET_DUMPABLE 0: flows run as the same user, and this keeps them out of this process's
    ``/proc`` entries (its environment and memory, which may hold the Redis URL). Call it before
    any flow can run; a child becomes dumpable again when it execs."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        pass  # not Linux
