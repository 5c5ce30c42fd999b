"""Writing a run's output: a flow's stdout/stderr bytes into history entries (``format.py``), shipped to Redis.

Bytes are decoded incrementally (invalid UTF-8 is replaced), cut into lines (a line
longer than ``max_line_bytes`` is split into chunks marked partial), numbered, and sent
in batches through ``lua/append.lua``, which is idempotent: after a lost connection the
same batch is simply sent again. While Redis is unreachable, entries wait in memory up to
``buffer_limit`` bytes; past that, :attr:`OutputWriter.full` tells the executor to stop
reading the flow's pipes, so the flow blocks instead of the worker growing.

A failover can lose entries the old primary had acknowledged (replication is asynchronous). The
writer keeps its newest acknowledged batches, up to ``RESEND_BYTES`` (and always the last), and when the history turns
out to end before them (``append.lua`` stops at the gap and says where the history ends) it sends
them again; lines older than that window are lost, and the history shows the gap. Behind Sentinel,
an attempt's last flush also asks where the history ends, for the lines lost when nothing followed.
"""

from __future__ import annotations

import codecs
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backoff import Backoff
from ..connection import TRANSIENT_ERRORS
from ..sentinel import is_sentinel_url
from ..settings import Settings
from ..store.protocol import RunScripts
from .format import STREAM_CODES, entry_fields

log = logging.getLogger("envflow.worker")

RESEND_BYTES = 1024 * 1024  # acknowledged output kept to send again after a failover lost it


@dataclass
class _Stream:
    code: str
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    tail: str = ""  # text after the last newline


class OutputWriter:
    """Collects one attempt's output and appends it to the run's history."""

    def __init__(
        self, scripts: RunScripts, run_id: str, attempt: int, echo: Callable[[str, str], None] | None = None
    ) -> None:
        settings: Settings = scripts.settings
        self.scripts = scripts
        self.run_id = run_id
        self.attempt = attempt
        self.max_chars = settings.max_line_bytes  # chunk size, in characters of decoded text
        self.buffer_limit = settings.output_buffer_bytes
        self.echo = echo
        self.streams = {code: _Stream(code) for code in STREAM_CODES}
        self.seq = 0
        self.pending: list[str] = []  # flattened append.lua arguments, 5 per entry
        self.pending_bytes = 0
        self.acked: deque[tuple[list[str], int]] = deque()  # the newest acknowledged batches, with their bytes
        self.acked_bytes = 0
        self.accept_gap = False  # the history lacks lines no longer kept here: write past the gap
        self.check_end = is_sentinel_url(settings.redis_url)  # ask where the history ends, at the end
        self.fenced = False  # the run is no longer this attempt's: stop the flow
        self.retry_at = 0.0  # monotonic time before which a failed flush is not retried
        self._backoff = Backoff()
        self.connected = True

    @property
    def full(self) -> bool:
        return self.pending_bytes >= self.buffer_limit

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)

    def feed(self, code: str, data: bytes) -> None:
        """Add bytes read from a stream; complete lines become pending entries."""
        stream = self.streams[code]
        text = stream.tail + stream.decoder.decode(data)
        cut = text.rfind("\n")
        if cut >= 0:
            self._add(code, text[:cut], partial=False)
            text = text[cut + 1 :]
        while len(text) >= self.max_chars:
            self._add(code, text[: self.max_chars], partial=True)
            text = text[self.max_chars :]
        stream.tail = text

    def close_stream(self, code: str) -> None:
        """The stream reached EOF: its unterminated last line becomes an entry."""
        stream = self.streams[code]
        text = stream.tail + stream.decoder.decode(b"", final=True)
        stream.tail = ""
        if text:
            self._add(code, text, partial=True)

    def note(self, text: str) -> None:
        """An envflow status line, shown to followers on stderr."""
        for line in text.splitlines() or [""]:
            self._add("e", f"envflow: {line}", partial=False)

    def _add(self, code: str, block: str, partial: bool) -> None:
        """Queue ``block`` (complete lines joined by newlines; with ``partial``, its last line is a chunk)."""
        if not partial and len(block) > self.max_chars:
            lines = block.split("\n")
            if max(map(len, lines)) > self.max_chars:
                group: list[str] = []
                for line in lines:
                    if len(line) <= self.max_chars:
                        group.append(line)
                        continue
                    if group:
                        self._entry(code, "\n".join(group), False, len(group))
                        group = []
                    while len(line) > self.max_chars:
                        self._entry(code, line[: self.max_chars], True, 1)
                        line = line[self.max_chars :]
                    group.append(line)
                if group:
                    self._entry(code, "\n".join(group), False, len(group))
                return
        self._entry(code, block, partial, block.count("\n") + 1)

    def _entry(self, code: str, block: str, partial: bool, n: int) -> None:
        self.pending += entry_fields(self.seq, code, partial, n, block)
        self.pending_bytes += len(block) + 32
        self.seq += n
        if self.echo is not None:
            self.echo(code, block)

    def flush(self, force: bool = False) -> bool:
        """Send pending entries; True when nothing is left pending. Never raises on a lost connection."""
        if not self.pending or self.fenced:
            return not self.pending
        if not force and time.monotonic() < self.retry_at:
            return False
        try:
            result = self.scripts.append(self.run_id, self.attempt, self.pending, self.accept_gap).run()
        except TRANSIENT_ERRORS as e:
            if self.connected:
                log.warning("lost Redis while streaming output (%s); buffering and retrying", e)
            self.connected = False
            self.retry_at = time.monotonic() + self._backoff.next()
            return False
        if not self.connected:
            log.info("Redis is back; buffered output sent")
        self.connected, self.retry_at = True, 0.0
        self._backoff.reset()
        if result < 0:
            self.fenced = True
        elif result < self.seq:
            return self._resend_from(result)
        self._acknowledged(self.pending, self.pending_bytes)
        self.pending = []
        self.pending_bytes = 0
        self.accept_gap = False
        return True

    def _acknowledged(self, batch: list[str], size: int) -> None:
        """Keep a sent batch whole (cheap per flush); the oldest go past ``RESEND_BYTES``, the last stays."""
        self.acked.append((batch, size))
        self.acked_bytes += size
        while self.acked_bytes > RESEND_BYTES and len(self.acked) > 1:
            self.acked_bytes -= self.acked.popleft()[1]

    def _resend_from(self, history_end: int) -> bool:
        """The history ends at line ``history_end``, before lines this writer sent: send them again
        (the pending ones after them), or, for lines no longer kept, accept the gap."""
        flat = [field_ for batch, _ in self.acked for field_ in batch] + self.pending
        entries = [flat[i : i + 5] for i in range(0, len(flat), 5)]
        resend = [e for e in entries if int(e[0]) + int(e[3]) > history_end]
        self.acked.clear()
        self.acked_bytes = 0
        self.pending = [field_ for entry in resend for field_ in entry]
        self.pending_bytes = sum(len(e[4]) + 32 for e in resend)
        first = int(resend[0][0]) if resend else self.seq
        self.accept_gap = first > history_end
        if self.accept_gap:
            log.warning("run %s: lines %d to %d were lost with the Redis primary (a failover); the history "
                        "shows the gap", self.run_id[:8], history_end, first - 1)
        else:
            log.warning("run %s: the Redis primary lacks output it had acknowledged (a failover); sending "
                        "%d line(s) again", self.run_id[:8], self.seq - history_end)
        return self.flush(force=True)

    def check_history_end(self) -> None:
        """Behind Sentinel: make sure the history has every line sent, sending lost ones again."""
        if not self.check_end or self.fenced or self.pending or not self.seq:
            return
        try:
            result = self.scripts.append(self.run_id, self.attempt, []).run()
        except TRANSIENT_ERRORS:
            return  # the caller's flush_until_done rides the outage out; its end check is best effort
        if 0 <= result < self.seq:
            self._resend_from(result)


    def flush_until_done(self) -> None:
        """Send what is pending, waiting out a Redis outage (with backoff); stop when fenced."""
        for check in (False, True):
            if check:
                self.check_history_end()
            while not self.flush(force=False):
                if self.fenced:
                    return
                time.sleep(max(self.retry_at - time.monotonic(), 0.01))


def make_echo(short_id: str, max_bytes: int) -> Callable[[str, str], None]:
    """Echo flow lines to the worker's own output, prefixed with the run's short id, up to
    ``max_bytes`` of them per attempt: a flood must not fill the worker's log."""
    prefix = f"[{short_id}] "
    left = max_bytes

    def echo(code: str, block: str) -> None:
        nonlocal left
        if left <= 0:
            return
        left -= len(block) + 1
        out = sys.stdout if code == "o" else sys.stderr
        if left < 0:
            block = f"envflow: the rest of this run's output is not echoed here (over {max_bytes} bytes; "
            block += "the run's history keeps the newest ENVFLOW_HISTORY_MAX_BYTES)"
        out.write(prefix + block.replace("\n", "\n" + prefix) + "\n")
        out.flush()

    return echo
