"""A run's output as server-sent events: the records ``FlowRun.records()`` yields, in its order.

The stream is the CLI's ``--follow`` reader (``envflow.output``: subscribe first, replay the
history, stream live, fill gaps), run in a thread per browser, so an early and a late page
see the same lines. Events::

    event: lines   data: {"a": attempt, "s": seq of the first line, "k": "o" | "e", "p": last line partial,
                          "t": [line texts]}
    event: gap     data: {"text": "..."}      the history's caps dropped lines here
    event: end     data: {"attempt": n, "state": "...", "final": true | false}
    event: problem data: {"text": "..."}      the stream stopped (Redis lost for longer than the reader retries)

Every event's id is ``<attempt>-<seq>-<next seq>``: a reconnecting EventSource sends the last one
back (``Last-Event-ID``) and the stream resumes after it. A comment goes out whenever the output
is quiet for a heartbeat interval; it keeps proxies from closing the connection, and a thread
whose browser has gone stops then. At most ``ENVFLOW_UI_MAX_STREAMS`` streams run at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from ..errors import EnvflowError
from ..flow_run import FlowRun
from ..output import Entry, dropped_before
from ..waits import Waiting

log = logging.getLogger("envflow.ui")
KEEPALIVE = ": keepalive\n\n"
AHEAD = 64  # chunks the thread may run ahead of the connection before it waits


class Gone(Exception):
    """The browser went away: the thread stops following."""


def event(name: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def parse_last_event_id(text: str | None) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """``(after, previous)`` from a ``Last-Event-ID``: the last record's key and where it ended."""
    parts = (text or "").split("-")
    # Stream ids are two 64-bit numbers: anything else (a 5,000-digit number, say) means start over.
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts):
        return None, None
    attempt, seq, following = (int(p) for p in parts)
    if max(attempt, seq, following) >= 2**63:
        return None, None
    return (attempt, seq), (attempt, following)


def sse_chunks(flow_run: FlowRun, after: tuple[int, int] | None, previous: tuple[int, int] | None,
               keepalive: Callable[[], None]) -> Iterator[str]:
    """The events of ``flow_run``'s output after ``after``, until the run ends."""

    def idle() -> bool:
        keepalive()  # raises Gone when the browser has left
        state = flow_run.store.state(flow_run.id)
        return state is None or state.is_final  # then the follower reads what is left and stops

    for record in flow_run.records(after=after, on_idle=idle):
        if isinstance(record, Waiting):  # why it has not started: shown until it does, not part of the output
            yield event("waiting", {"kind": record.kind, "text": record.message})
            continue
        event_id = f"{record.attempt}-{record.seq}-{record.next_id[1]}"
        if isinstance(record, Entry):
            dropped = dropped_before(previous, record)
            if dropped is not None:
                yield event("gap", {"text": dropped})
            yield event("lines", {"a": record.attempt, "s": record.seq, "k": record.stream, "p": record.partial,
                                  "t": [line.text for line in record.lines()]}, event_id)
        else:
            yield event("end", {"attempt": record.attempt, "state": record.state, "final": record.final}, event_id)
        previous = record.next_id


class Bridge:
    """Chunks from a follower thread to the event loop, at most ``AHEAD`` ahead (then the thread waits)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.room = threading.Semaphore(AHEAD)
        self.closed = threading.Event()
        self.ended = False

    def put(self, chunk: str | None) -> None:
        """From the thread: hand over a chunk (None: the end), waiting for room. Raises Gone once closed."""
        while not self.room.acquire(timeout=1.0):
            if self.closed.is_set():
                raise Gone
        if self.closed.is_set():
            raise Gone
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk)
        except RuntimeError:  # the loop has closed
            raise Gone from None

    async def get_batch(self) -> str | None:
        """Everything handed over so far, joined (None once the end is reached)."""
        if self.ended:
            return None
        parts: list[str] = []
        item = await self.queue.get()
        while True:
            self.room.release()
            if item is None:
                self.ended = True
                break
            parts.append(item)
            if self.queue.empty():
                break
            item = self.queue.get_nowait()
        return "".join(parts) if parts else None

    def close(self) -> None:
        self.closed.set()
        self.queue.put_nowait(None)


class StreamSlots:
    """Counts the live streams against ``ENVFLOW_UI_MAX_STREAMS`` (each holds a thread and a Redis connection)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.active -= 1


Scope = MutableMapping[str, Any]


class EventStream:
    """An ASGI response that sends a follower thread's events as they come, until the run ends or
    the browser leaves (then the thread stops at its next event or keepalive)."""

    def __init__(self, flow_run: FlowRun, last_event_id: str | None, slots: StreamSlots) -> None:
        self.flow_run = flow_run
        self.after, self.previous = parse_last_event_id(last_event_id)
        self.slots = slots

    def _produce(self, bridge: Bridge) -> None:
        try:
            for chunk in sse_chunks(self.flow_run, self.after, self.previous, lambda: bridge.put(KEEPALIVE)):
                bridge.put(chunk)
            bridge.put(None)
        except Gone:
            pass
        except EnvflowError as e:  # Redis lost for longer than the follower retries
            log.warning("live output of run %s stopped: %s", self.flow_run.id, e)
            _quietly(bridge.put, event("problem", {"text": str(e)}))
            _quietly(bridge.put, None)
        except Exception:  # whatever it was, the response ends rather than hangs
            log.exception("live output of run %s stopped", self.flow_run.id)
            _quietly(bridge.put, event("problem", {"text": "the live output stopped; reload the page"}))
            _quietly(bridge.put, None)
        finally:
            self.slots.give_back()

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        bridge = Bridge(asyncio.get_running_loop())
        # Started first: from here on the thread alone gives the stream's slot back, whatever happens.
        threading.Thread(target=self._produce, args=(bridge,), name="envflow-ui-stream", daemon=True).start()
        watcher = asyncio.ensure_future(_until_disconnect(receive, bridge))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no")]})
            while (batch := await bridge.get_batch()) is not None:
                await send({"type": "http.response.body", "body": batch.encode(), "more_body": True})
            if not bridge.closed.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            bridge.closed.set()
            watcher.cancel()


async def _until_disconnect(receive: Callable[[], Awaitable[Any]], bridge: Bridge) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    bridge.close()


def _quietly(put: Callable[[str | None], None], chunk: str | None) -> None:
    try:
        put(chunk)
    except Gone:
        pass
