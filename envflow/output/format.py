"""A run's output history: the one definition of its entries, as written and as read.

The worker appends entries to the run's stream (``envflow:run:<id>:out``) and publishes each on
the channel of the same name, in one script call (``lua/append.lua``). An entry holds
consecutive lines of one stream: id ``<attempt>-<seq of its first line>``, fields ``s`` (``o``
stdout, ``e`` stderr, ``x`` end of attempt), ``p`` (1 when its last line has no newline yet: a
long line split into chunks, or a prompt), ``n`` (line count), ``d`` (the lines, joined by
newlines). End records carry JSON: state, final, attempt (``store/lua/_output.lua``'s ``end_record``).
A live message is the same entry as ``<id>|<s>|<p>|<n>|<d>``.

When a run ends with a short history (at most ``PACK_MAX_ENTRIES`` entries and
``PACK_MAX_BYTES`` bytes of data), ``store/lua/_output.lua``'s ``finalize`` packs it into one string
(``envflow:run:<id>:packed``, same expiry) and deletes the stream: each entry as
``<id>|<s>|<p>|<n>|<bytes of d>|<d>``, in order. Readers see the same entries either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

STREAM_NAMES = {"o": "stdout", "e": "stderr"}
STREAM_CODES = tuple(STREAM_NAMES)
END = "x"


@dataclass(slots=True, frozen=True)
class OutputLine:
    """One line a flow printed. ``str(line)`` is its text, without the newline."""

    text: str
    stream: str  # "stdout" or "stderr"; "envflow" for envflow's own notes (why the run waits)
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

CAPS = "it keeps the newest ENVFLOW_HISTORY_MAX_LINES lines and ENVFLOW_HISTORY_MAX_BYTES bytes"


def dropped_before(previous: tuple[int, int] | None, entry: Entry) -> str | None:
    """What a reader shows where the history's caps dropped lines before ``entry``; None where none were.

    :param previous: where the record read before ``entry`` ended (its ``next_id``); None at the start.
    """
    if previous is None:
        if (entry.attempt, entry.seq) not in ((1, 0), (0, 1)):  # 0-1: why a run that never started ended
            return f"earlier output was dropped from the history ({CAPS})"
    elif entry.attempt == previous[0] and entry.seq > previous[1]:
        return f"{entry.seq - previous[1]} lines were dropped from the history here ({CAPS})"
    elif entry.attempt > previous[0] and entry.seq > 0:
        return f"the first {entry.seq} lines of attempt {entry.attempt} were dropped from the history ({CAPS})"
    return None


def entry_fields(seq: int, code: str, partial: bool, n: int, block: str) -> list[str]:
    """An entry as ``append.lua`` takes it: first line seq, stream, partial, line count, data."""
    return [str(seq), code, "1" if partial else "0", str(n), block]


def _split_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    a, _, s = text.partition("-")
    return int(a), int(s)


def _make(attempt: int, seq: int, stream: str, partial: str, n: str, data: str) -> Record:
    if stream == END:
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


def is_end(fields: dict[bytes, bytes]) -> bool:
    """Whether a history entry's fields are an end-of-attempt record."""
    return fields.get(b"s") == END.encode()


def parse_packed(packed: bytes) -> list[Record]:
    """The entries of a packed history, in order."""
    records: list[Record] = []
    at = 0
    while at < len(packed):
        header: list[bytes] = []
        for _ in range(5):  # id, stream, partial, line count, data size
            bar = packed.index(b"|", at)
            header.append(packed[at:bar])
            at = bar + 1
        raw_id, stream, partial, n, size = header
        data, at = packed[at:at + int(size)], at + int(size)
        attempt, seq = _split_id(raw_id)
        records.append(_make(attempt, seq, stream.decode(), partial.decode(), n.decode(), data.decode("utf-8", "replace")))
    return records
