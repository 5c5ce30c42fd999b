"""Output a failover lost in the replication lag is sent again: the writer keeps its newest
acknowledged entries and resends them when the history turns out to end before them.

The history a promoted replica has is made here by deleting the tail of a real history, as the
old primary's last acknowledged appends would be missing there.
"""

from __future__ import annotations

import pytest

from envflow.client import Client
from envflow.output import writer as writer_module
from envflow.output.format import Entry, parse_history_entry
from envflow.output.writer import OutputWriter
from envflow.store import keys

from .support.runs import claim, register


def history_lines(client: Client, run_id: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for raw_id, fields in client.redis.xrange(keys.output(run_id)):
        record = parse_history_entry(raw_id, fields)
        if isinstance(record, Entry):
            out += [(line.seq, line.text) for line in record.lines()]
    return out


def lose_tail(client: Client, run_id: str, keep: int) -> None:
    """The history as a replica that missed every line from ``keep`` on has it."""
    key = keys.output(run_id)
    kept = [(raw_id, fields) for raw_id, fields in client.redis.xrange(key) if int(raw_id.split(b"-")[1]) < keep]
    client.redis.delete(key)  # rebuilt, as its last id must be the last kept one's
    for raw_id, fields in kept:
        client.redis.xadd(key, fields, id=raw_id)
    client.redis.hset(keys.run(run_id), "out_seq", keep)


def started_writer(client: Client, lines: range) -> OutputWriter:
    register(client)
    run_id = client.store.create(client.get_deployment("flow/dep"), {})
    writer = OutputWriter(client.store.scripts, run_id, claim(client, run_id).attempt)
    write(writer, lines)
    return writer


def write(writer: OutputWriter, lines: range) -> None:
    for i in lines:
        writer.feed("o", f"line {i}\n".encode())
        assert writer.flush(force=True)


def expected(lines: range) -> list[tuple[int, str]]:
    return [(i, f"line {i}") for i in lines]


def test_lost_lines_are_sent_again_before_new_ones(client: Client) -> None:
    writer = started_writer(client, range(20))
    lose_tail(client, writer.run_id, 10)
    write(writer, range(20, 30))
    assert history_lines(client, writer.run_id) == expected(range(30))


def test_the_end_check_finds_lines_lost_when_nothing_followed(client: Client) -> None:
    writer = started_writer(client, range(20))
    writer.check_end = True  # as behind Sentinel
    lose_tail(client, writer.run_id, 12)
    writer.flush_until_done()
    assert history_lines(client, writer.run_id) == expected(range(20))


def test_lines_older_than_the_window_leave_a_gap(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "RESEND_BYTES", 100)  # keeps the newest 2 or 3 entries
    writer = started_writer(client, range(20))
    kept = int(writer.acked[0][0][0])  # the first line of the oldest batch kept
    lose_tail(client, writer.run_id, 5)
    write(writer, range(20, 22))
    assert history_lines(client, writer.run_id) == expected(range(5)) + expected(range(kept, 22))
    assert not writer.accept_gap and len(writer.acked) <= 3
