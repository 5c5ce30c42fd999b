"""Reading a run's output: replaying its history and following it live (format: ``format.py``).

A follower subscribes first, then replays the history, then takes live messages,
filling any gap (a dropped subscription, a slow consumer) from the history. So an
early and a late follower see exactly the same lines in the same order. The history is the
run's stream, or, once a run with a short history has ended, the string it was packed into
(``format.py``); a reader that was paging through the stream when it was packed goes on from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import redis
from redis import Redis

from .. import waits
from ..backoff import Backoff
from ..errors import QueueError
from ..store import keys
from ..waits import Waiting
from .format import AttemptEnd, Entry, OutputLine, Record, is_end, parse_history_entry, parse_message, parse_packed

HISTORY_PAGE = 500  # entries per XRANGE call when replaying


def record_attempt(last: tuple[int, int] | None) -> int:
    return last[0] if last else 0


def _key(record: Record) -> tuple[int, int]:
    return (record.attempt, record.seq)


def ends_with_attempt_end(redis_client: Redis, run_id: str) -> bool:
    """Whether the run's history ends with an end-of-attempt record, which a follower reads and stops on
    (a final run whose history lacks one, expired say, must be stopped by other means)."""
    with redis_client.pipeline(transaction=False) as pipe:
        pipe.xrevrange(keys.output(run_id), count=1)
        pipe.exists(keys.packed_output(run_id))  # a packed history always ends with the run's end record
        last, packed = pipe.execute()
    return bool(packed) or bool(last) and is_end(last[0][1])


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
        self.packed_key = keys.packed_output(run_id)
        self.on_idle = on_idle
        self.idle_interval = idle_interval
        self.reconnect_for = reconnect_for
        self.last: tuple[int, int] | None = None  # id of the last record yielded
        self.expected: tuple[int, int] | None = None  # id the next contiguous record has
        self.ended: AttemptEnd | None = None
        self.ended_attempt: int | None = None  # attempt of the last end record seen
        self.run_key = keys.run(run_id)
        self.waiting_channel = waits.channel(self.run_key)
        self.waiting: Waiting | None = None  # the last waiting reason yielded

    def _waiting_now(self, announced: bytes | None = None) -> Iterator[Waiting]:
        """The run's waiting reason, when it is new to this follower (announced, or read from the run)."""
        if self.ended is not None:
            return
        if announced is None:
            state, raw = self._retrying(lambda: self.redis.hmget(self.run_key, "state", waits.FIELD))
            if state != b"PENDING":
                return
        waiting = Waiting.from_json(announced if announced is not None else raw)
        if waiting is not None and (self.waiting is None or (waiting.kind, waiting.message) !=
                                    (self.waiting.kind, self.waiting.message)):
            self.waiting = waiting
            yield waiting

    def records(self, timeout: float | None = None,
                after: tuple[int, int] | None = None) -> Iterator[Record | Waiting]:
        """Yield every record in order; stop after the final end record (or ``timeout`` seconds). Between
        them, while the run waits, a :class:`Waiting` whenever its reason is new (``waits.py``).

        :param after: resume after the record with this ``(attempt, seq)``: only later records are yielded.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self._subscribe()
        self.last = after
        try:
            yield from self._accept_all(self._history_after(after))
            yield from self._waiting_now()
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
                    yield from self._waiting_now()
                    if self.ended is None and self.on_idle is not None and self.on_idle():
                        yield from self._accept_all(self._history_after(self.last))
                        return
                    continue
                if message["type"] != "message":
                    continue
                if message["channel"] == self.waiting_channel.encode():
                    yield from self._waiting_now(message["data"])
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
            elif isinstance(record, Waiting) and record.kind != waits.QUEUED:  # envflow's line: why it cannot start
                yield OutputLine(f"envflow: {record.message}", "envflow", -1, record_attempt(self.last))

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
        last = after
        while True:
            page, packed = self._retrying(lambda start=start: self._page(start, end))
            for raw_id, fields in page:
                record = parse_history_entry(raw_id, fields)
                last = _key(record)
                yield record
            if len(page) == HISTORY_PAGE:
                start = "(" + page[-1][0].decode()
                continue
            if packed is not None:  # the run ended and its history was packed: the rest is there
                yield from (r for r in parse_packed(packed)
                            if (last is None or _key(r) > last) and (upto is None or _key(r) <= upto))
            return

    def _page(self, start: str, end: str) -> tuple[list, bytes | None]:
        """A page of the stream, and the packed history (None while there is none), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self.stream_key, start, end, count=HISTORY_PAGE)
            pipe.get(self.packed_key)
            page, packed = pipe.execute()
        return page, packed

    def _subscribe(self) -> redis.client.PubSub:
        def attempt() -> redis.client.PubSub:
            pubsub = self.redis.pubsub()
            pubsub.subscribe(self.stream_key, self.waiting_channel)
            # Wait for the confirmations: only then is every later publish delivered to us.
            deadline, confirmed = time.monotonic() + 10, 0
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1.0)
                if message and message["type"] == "subscribe":
                    confirmed += 1
                    if confirmed == 2:
                        return pubsub
            pubsub.close()
            raise redis.exceptions.TimeoutError("no subscribe confirmation")

        return self._retrying(attempt)

    def _retrying(self, call):  # type: ignore[no-untyped-def]
        backoff, give_up = Backoff(), time.monotonic() + self.reconnect_for
        while True:
            try:
                return call()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                delay = backoff.next()
                if time.monotonic() + delay > give_up:
                    raise QueueError(f"lost Redis while following {self.stream_key}: {e}") from e
                time.sleep(delay)
