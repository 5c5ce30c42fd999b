"""Helpers of the UI suite: a real `envflow ui` process, a browser-like HTTP session, an SSE reader."""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..support.processes import envflow_command, free_port

CSRF_META = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')


class UIProcess:
    """``envflow ui`` on a free loopback port, stopped at the end of the test."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.handle = open(log, "wb")
        self.proc = subprocess.Popen(envflow_command("ui", "--port", str(self.port), *args), cwd=cwd,
                                     env={**os.environ, **env}, stdout=self.handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"envflow ui did not start:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


@dataclass
class Session:
    """A browser's view of the UI: cookies kept, redirects not followed, HTML asked for."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(self, method: str, path: str, data: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={"Accept": "text/html", **(headers or {})})
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(req, timeout=30) as response:
                return Reply(response.status, {k.lower(): v for k, v in response.headers.items()},
                             response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as e:
            return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode("utf-8", "replace"))

    def get(self, path: str, **kwargs) -> Reply:  # type: ignore[no-untyped-def]
        return self.request("GET", path, **kwargs)

    def csrf(self, path: str = "/runs") -> str:
        """The CSRF token the page at ``path`` gives its forms (and sets this session's cookie)."""
        page = self.get(path)
        match = CSRF_META.search(page.text)
        assert match, f"no CSRF token on {path} ({page.status}):\n{page.text[:500]}"
        return match.group(1)

    def post(self, path: str, data: dict[str, str] | None = None, *, token: str | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        fields = dict(data or {})
        fields.setdefault("csrf", token if token is not None else self.csrf())
        return self.request("POST", path, fields, headers)


@dataclass
class Event:
    name: str
    id: str | None
    data: dict


def sse_events(base: str, path: str, headers: dict[str, str] | None = None,
               timeout: float = 60) -> Iterator[Event]:
    """Read a server-sent event stream until the server ends it (or ``timeout`` s pass without data)."""
    parsed = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        response = conn.getresponse()
        assert response.status == 200, response.read()[:300]
        name, event_id, data = "message", None, []
        while True:
            raw = response.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\n")
            if line == "":
                if data:
                    yield Event(name, event_id, json.loads("\n".join(data)))
                name, event_id, data = "message", None, []
            elif line.startswith(":"):
                continue
            else:
                key, _, value = line.partition(": ")
                if key == "event":
                    name = value
                elif key == "id":
                    event_id = value
                elif key == "data":
                    data.append(value)
    finally:
        conn.close()


def sse_lines(events: Iterator[Event]) -> list[tuple[str, str, int, int, bool]]:
    """The lines of an event stream as ``(stream, text, seq, attempt, partial)``, like ``FlowRun.follow()``'s."""
    names = {"o": "stdout", "e": "stderr"}
    lines = []
    for event in events:
        if event.name == "lines":
            texts = event.data["t"]
            for i, text in enumerate(texts):
                partial = event.data["p"] and i == len(texts) - 1
                lines.append((names[event.data["k"]], text, event.data["s"] + i, event.data["a"], partial))
        elif event.name == "end" and event.data["final"]:
            break
    return lines


def wait_for(check, what: str, timeout: float = 30, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it returns something truthy (bounded); fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
