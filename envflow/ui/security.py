"""Who may use the web UI, and proof that a state-changing request comes from its own pages.

- **Where it listens.** Without ``ENVFLOW_UI_TOKEN`` the UI binds loopback only (:func:`check_bind`),
  and it answers only requests addressed to a loopback name (``Host``), so a web page whose
  domain is re-pointed at 127.0.0.1 (DNS rebinding) cannot talk to it.
- **The token.** With ``ENVFLOW_UI_TOKEN`` every page but ``/healthz``, ``/login`` and ``/static``
  needs it: the login page asks for it once and sets a session cookie (a random session id and
  its expiry, signed with a key derived from the token, so the token itself never sits in the
  browser); logging out ends the session for good (its id is kept in Redis until it would have
  expired). Scripts or Prometheus send ``Authorization: Bearer <token>``. Tokens are compared as
  bytes, whatever characters they hold.
- **CSRF.** Every POST carries a token tied to a random, HttpOnly, SameSite=Strict cookie
  (``HMAC(secret, cookie)``), in a form field or the ``X-CSRF-Token`` header; a POST whose
  ``Origin`` is another site is refused too.
- **Headers.** A strict Content-Security-Policy (scripts and styles from ``/static`` only, no
  inline script), no framing, no MIME sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError
from ..store import keys

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

SESSION_COOKIE = "envflow_session"
CSRF_COOKIE = "envflow_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MIN_TOKEN = 16
OPEN_PATHS = ("/healthz", "/login", "/static/")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse to serve on anything but loopback without a token, and refuse short tokens.

    :raises ConfigError: saying what to set.
    """
    if token and len(token) < MIN_TOKEN:
        raise ConfigError(f"ENVFLOW_UI_TOKEN is too short ({len(token)} characters; use {MIN_TOKEN} or more, "
                          "e.g. `openssl rand -hex 24`)")
    if not token and not is_loopback(host):
        raise ConfigError(f"the UI can start code on the workers: binding {host!r} (not loopback) needs "
                          "ENVFLOW_UI_TOKEN (e.g. `export ENVFLOW_UI_TOKEN=$(openssl rand -hex 24)`), "
                          "or bind 127.0.0.1")


def _digest(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _same(given: bytes, expected: bytes) -> bool:
    """A constant-time comparison of bytes (``compare_digest`` refuses str that is not ASCII)."""
    return hmac.compare_digest(given, expected)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class SessionEnds:
    """Where logged-out sessions are remembered until they would have expired: Redis, shared by replicas."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def end(self, session_id: str, seconds: int) -> None:
        self.redis.set(keys.ended_session(session_id), 1, ex=max(seconds, 1))

    def ended(self, session_id: str) -> bool:
        try:
            return bool(self.redis.exists(keys.ended_session(session_id)))
        except RedisError:  # cannot tell: the session does not pass (nor would any page without Redis)
            return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _cookies(scope: Scope) -> dict[str, str]:
    raw = _header(scope, b"cookie")
    if not raw:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header: treat as none
        return {}
    return {k: m.value for k, m in jar.items()}


class Guard:
    """The UI's access rules: token sessions, CSRF tokens, allowed ``Host`` names.

    :param token: ``ENVFLOW_UI_TOKEN`` ("" for none).
    :param bind_host: the address the UI listens on (an allowed ``Host`` name besides loopback's).
    """

    def __init__(self, token: str, bind_host: str = "127.0.0.1", *, session_ttl: int = 12 * 3600,
                 ends: SessionEnds | None = None) -> None:
        self.token = token
        self.token_bytes = _utf8(token)
        # With a token, sessions and CSRF tokens survive a restart and agree across replicas.
        self.secret = hashlib.sha256(b"envflow-ui|" + self.token_bytes).digest() if token else secrets.token_bytes(32)
        self.session_ttl = session_ttl
        self.ends = ends
        self.allowed_hosts = LOOPBACK_NAMES | {bind_host.lower()}

    def host_allowed(self, scope: Scope) -> bool:
        if self.token:
            return True  # the token protects; reverse proxies may use any name
        host = (_header(scope, b"host") or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in self.allowed_hosts

    def authenticated(self, scope: Scope) -> bool:
        if not self.token:
            return True
        auth = _header(scope, b"authorization") or ""
        if auth.lower().startswith("bearer ") and _same(auth[7:].strip().encode("latin-1"), self.token_bytes):
            return True
        return self.session_of(scope) is not None

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and _same(_utf8(given.strip()), self.token_bytes)

    def new_session(self) -> str:
        """A session cookie's value: ``<id>.<expiry>.<signature>``."""
        value = f"{secrets.token_hex(16)}.{int(time.time()) + self.session_ttl}"
        return f"{value}.{_digest(self.secret, 'session|' + value)}"

    def session_of(self, scope: Scope) -> str | None:
        """The id of the request's session, when it is signed by this UI, unexpired and not ended."""
        parts = _cookies(scope).get(SESSION_COOKIE, "").split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        session_id, expiry, signature = parts
        expected = _digest(self.secret, f"session|{session_id}.{expiry}")
        if not _same(_utf8(signature), expected.encode()) or int(expiry) <= time.time():
            return None
        if self.ends is not None and self.ends.ended(session_id):
            return None
        return session_id

    def end_session(self, scope: Scope) -> None:
        """Log out: the request's session stops working here and on every replica."""
        session_id = self.session_of(scope)
        if session_id is not None and self.ends is not None:
            self.ends.end(session_id, self.session_ttl)

    def csrf_for(self, cookie: str) -> str:
        """The token a page's forms carry for this browser's CSRF cookie."""
        return _digest(self.secret, "csrf|" + cookie)

    def csrf_valid(self, scope: Scope, given: str | None) -> bool:
        """A POST's CSRF token matches its cookie, and its Origin, when sent, is this site."""
        cookie = _cookies(scope).get(CSRF_COOKIE, "")
        given = given or _header(scope, CSRF_HEADER.encode()) or ""
        if not cookie or not given or not _same(_utf8(given), self.csrf_for(cookie).encode()):
            return False
        origin = _header(scope, b"origin")
        if origin is None:  # browsers send it with every cross-site POST; same-site ones may omit it
            return True
        host = _header(scope, b"host") or ""
        return origin.split("://", 1)[-1] == host

    def session_cookie(self, secure: bool) -> str:
        return _cookie_header(SESSION_COOKIE, self.new_session(), secure) + f"; Max-Age={self.session_ttl}"


def _cookie_header(name: str, value: str, secure: bool) -> str:
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


class GuardMiddleware:
    """ASGI middleware: Host check, token, the CSRF cookie (set on first visit) and security headers.

    The CSRF cookie of the request (new or sent back) is left in ``scope["state"]["csrf_cookie"]``
    for pages to derive their forms' token from.
    """

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.guard.host_allowed(scope):
            await _plain(send, 403, "this UI answers loopback names only (localhost, 127.0.0.1); "
                                    "set ENVFLOW_UI_TOKEN to serve other names")
            return
        path = scope.get("path", "")
        # In a thread: whether a session was ended is a question for Redis.
        if not path.startswith(OPEN_PATHS) and not await run_in_threadpool(self.guard.authenticated, scope):
            await _login_needed(scope, send)
            return
        existing = _cookies(scope).get(CSRF_COOKIE)
        cookie = existing or secrets.token_hex(16)
        scope.setdefault("state", {})["csrf_cookie"] = cookie
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if existing is None:
                    headers.append((b"set-cookie", _cookie_header(CSRF_COOKIE, cookie, secure).encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Callable[[Message], Awaitable[None]], status: int, text: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _login_needed(scope: Scope, send: Callable[[Message], Awaitable[None]]) -> None:
    """Pages send the browser to the login page; everything else (POSTs, streams, /metrics) gets 401."""
    accept = _header(scope, b"accept") or ""
    if scope.get("method") == "GET" and "text/html" in accept and _header(scope, b"authorization") is None:
        target = scope.get("path", "/")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        location = "/login?next=" + quote(target, safe="")
        await _plain(send, 303, "log in first", [(b"location", location.encode())])
        return
    await _plain(send, 401, "this UI needs its token: log in at /login, or send Authorization: Bearer <token>",
                 [(b"www-authenticate", b'Bearer realm="envflow"')])
