"""Delays between retries while Redis is away: the first short, each next doubled, up to a cap."""

from __future__ import annotations


class Backoff:
    """:param first: the first delay (seconds). :param cap: the longest."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        """The delay to wait now; the one after is twice as long, up to the cap."""
        delay = self.delay
        self.delay = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first
