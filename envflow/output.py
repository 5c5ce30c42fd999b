"""A run's output: the history entry format, and following it live.

The worker appends entries to the run's stream (``envflow:run:<id>:out``) and publishes
each on the channel of the same name, in one script call (``lua/append.lua``). An entry
holds consecutive lines of one stream: id ``<attempt>-<seq of its first line>``, fields
``s`` (``o`` stdout, ``e`` stderr, ``x`` end of attempt), ``p`` (1 when its last line
has no newline yet: a long line split into chunks, or a prompt), ``n`` (line count),
``d`` (the lines, joined by newlines). End records carry JSON: state, final, attempt.

A follower subscribes first, then replays the history, then takes live messages,
filling any gap (a dropped subscription, a slow consumer) from the history. So an
early and a late follower see exactly the same lines in the same order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
from redis import Redis

from . import keys
from .errors import QueueError

STREAM_NAMES = {"o": "stdout", "e": "stderr"}
HISTORY_PAGE = 500  # entries per XRANGE call when replaying


@dataclass(slots=True, frozen=True)
class OutputLine:
    """One line a flow printed. ``str(line)`` is its text, without the newline."""

    text: str
    stream: str  # "stdout" or "stderr"
    seq: int  # position within its attempt, from 0
    attempt: int
    partial: bool = False  # not ended by a newline (a chunk of a long line, or the last unterminated line)

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True, frozen=True)
class Entry:
    """A history entry: ``n`` consecutive lines of one stream."""

    attempt: int
    seq: int
    stream: str
    partial: bool
    n: int
    data: str

    @property
    def next_id(self) -> tuple[int, int]:
        return (self.attempt, self.seq + self.n)

    def lines(self) -> list[OutputLine]:
        texts = self.data.split("\n") if self.n else []
        name = STREAM_NAMES[self.stream]
        last = len(texts) - 1
        return [
            OutputLine(text, name, self.seq + i, self.attempt, self.partial and i == last) for i, text in enumerate(texts)
        ]


@dataclass(slots=True, frozen=True)
class AttemptEnd:
    """The end of an attempt; ``final`` when the run itself has ended."""

    attempt: int
    seq: int
    state: str
    final: bool

    @property
    def next_id(self) -> tuple[int, int]:
        return (self.attempt, self.seq + 1)


Record = Entry | AttemptEnd


def _split_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    a, _, s = text.partition("-")
    return int(a), int(s)


def _make(attempt: int, seq: int, stream: str, partial: str, n: str, data: str) -> Record:
    if stream == "x":
        end = json.loads(data)
        return AttemptEnd(attempt, seq, end["state"], bool(end["final"]))
    return Entry(attempt, seq, stream, partial == "1", int(n), data)


def parse_history_entry(raw_id: bytes, fields: dict[bytes, bytes]) -> Record:
    attempt, seq = _split_id(raw_id)
    return _make(
        attempt,
        seq,
        fields[b"s"].decode(),
        fields[b"p"].decode(),
        fields[b"n"].decode(),
        fields[b"d"].decode("utf-8", "replace"),
    )


def parse_message(payload: bytes) -> Record:
    raw_id, stream, partial, n, data = payload.split(b"|", 4)
    attempt, seq = _split_id(raw_id)
    return _make(attempt, seq, stream.decode(), partial.decode(), n.decode(), data.decode("utf-8", "replace"))


def _key(record: Record) -> tuple[int, int]:
    return (record.attempt, record.seq)


class OutputFollower:
    """Iterate over a run's output records, from the start, live, until the run ends.

    :param redis: a client; the follower opens one extra connection for its subscription.
    :param run_id: the run to follow.
    :param on_idle: called with nothing new for ``idle_interval`` seconds; it may return True
        to say the run has ended without an end record (then the follower stops).
    :param idle_interval: seconds between idle checks.
    :param reconnect_for: seconds the follower keeps retrying an unreachable Redis.
    """

    def __init__(
        self,
        redis_client: Redis,
        run_id: str,
        on_idle: Callable[[], bool] | None = None,
        idle_interval: float = 5.0,
        reconnect_for: float = 60.0,
    ) -> None:
        self.redis = redis_client
        self.stream_key = keys.output(run_id)
        self.on_idle = on_idle
        self.idle_interval = idle_interval
        self.reconnect_for = reconnect_for
        self.last: tuple[int, int] | None = None  # id of the last record yielded
        self.expected: tuple[int, int] | None = None  # id the next contiguous record has
        self.ended: AttemptEnd | None = None
        self.ended_attempt: int | None = None  # attempt of the last end record seen

    def records(self, timeout: float | None = None) -> Iterator[Record]:
        """Yield every record in order; stop after the final end record (or ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self._subscribe()
        try:
            yield from self._accept_all(self._history_after(None))
            while self.ended is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                wait = self.idle_interval if deadline is None else min(self.idle_interval, deadline - time.monotonic())
                try:
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=max(wait, 0.0))
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pubsub.close()
                    pubsub = self._subscribe()
                    yield from self._accept_all(self._history_after(self.last))
                    continue
                if message is None:
                    yield from self._accept_all(self._history_after(self.last))
                    if self.ended is None and self.on_idle is not None and self.on_idle():
                        yield from self._accept_all(self._history_after(self.last))
                        return
                    continue
                if message["type"] != "message":
                    continue
                record = parse_message(message["data"])
                if self.last is not None and _key(record) <= self.last:
                    continue  # already replayed from the history
                if self.expected is not None and not self._follows(record):
                    yield from self._accept_all(self._history_after(self.last, upto=_key(record)))
                    continue
                yield from self._accept_all([record])
        finally:
            pubsub.close()

    def lines(self, timeout: float | None = None) -> Iterator[OutputLine]:
        for record in self.records(timeout):
            if isinstance(record, Entry):
                yield from record.lines()

    def _follows(self, record: Record) -> bool:
        assert self.expected is not None
        if _key(record) == self.expected:
            return True
        # A new attempt starts at seq 0 once the previous one has ended.
        return self.ended_attempt is not None and record.attempt > self.ended_attempt and record.seq == 0

    def _accept_all(self, records: Iterator[Record] | list[Record]) -> Iterator[Record]:
        for record in records:
            if self.ended is not None:
                return
            if self.last is not None and _key(record) <= self.last:
                continue
            self.last = _key(record)
            self.expected = record.next_id
            if isinstance(record, AttemptEnd):
                self.ended_attempt = record.attempt
                if record.final:
                    self.ended = record
            yield record

    def _history_after(self, after: tuple[int, int] | None, upto: tuple[int, int] | None = None) -> Iterator[Record]:
        start = "-" if after is None else f"({after[0]}-{after[1]}"
        end = "+" if upto is None else f"{upto[0]}-{upto[1]}"
        while True:
            page = self._retrying(lambda start=start: self.redis.xrange(self.stream_key, start, end, count=HISTORY_PAGE))
            for raw_id, fields in page:
                yield parse_history_entry(raw_id, fields)
            if len(page) < HISTORY_PAGE:
                return
            start = "(" + page[-1][0].decode()

    def _subscribe(self) -> redis.client.PubSub:
        def attempt() -> redis.client.PubSub:
            pubsub = self.redis.pubsub()
            pubsub.subscribe(self.stream_key)
            # Wait for the confirmation: only then is every later publish delivered to us.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1.0)
                if message and message["type"] == "subscribe":
                    return pubsub
            pubsub.close()
            raise redis.exceptions.TimeoutError("no subscribe confirmation")

        return self._retrying(attempt)

    def _retrying(self, call):  # type: ignore[no-untyped-def]
        delay, give_up = 0.1, time.monotonic() + self.reconnect_for
        while True:
            try:
                return call()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                if time.monotonic() + delay > give_up:
                    raise QueueError(f"lost Redis while following {self.stream_key}: {e}") from e
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
