"""Writing a run's output: a flow's stdout/stderr bytes into history entries (``format.py``), shipped to Redis.

Bytes are decoded incrementally (invalid UTF-8 is replaced), cut into lines (a line
longer than ``max_line_bytes`` is split into chunks marked partial), numbered, and sent
in batches through ``lua/append.lua``, which is idempotent: after a lost connection the
same batch is simply sent again. While Redis is unreachable, entries wait in memory up to
``buffer_limit`` bytes; past that, :attr:`OutputWriter.full` tells the executor to stop
reading the flow's pipes, so the flow blocks instead of the worker growing.
"""

from __future__ import annotations

import codecs
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backoff import Backoff
from ..connection import TRANSIENT_ERRORS
from ..settings import Settings
from ..store.protocol import RunScripts
from .format import STREAM_CODES, entry_fields

log = logging.getLogger("envflow.worker")


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
            result = self.scripts.append(self.run_id, self.attempt, self.pending).run()
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
        self.pending = []
        self.pending_bytes = 0
        return True


    def flush_until_done(self) -> None:
        """Send what is pending, waiting out a Redis outage (with backoff); stop when fenced."""
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
