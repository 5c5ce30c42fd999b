"""One webhook request: a signed POST (Standard Webhooks), bounded in time and in what it reads.

No redirect is followed (``http.client`` follows none: a 3xx is an answer like any non-2xx), the answer's
body is read up to ``MAX_BODY`` bytes, and the whole request may take ``timeout`` seconds. The signature is
``standardwebhooks``' (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``); the key never appears in a log,
an error or a delivery's record.
"""

from __future__ import annotations

import http.client
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from .. import __version__

MAX_BODY = 4096  # bytes of an answer's body read (and kept as its error, shortened)
USER_AGENT = f"envflow-hooks/{__version__}"


@dataclass(frozen=True)
class Answer:
    """How one try went: ``code`` (None when no answer came), ``error`` (what to show), ``retry_after``
    (seconds the receiver asked us to wait), ``permanent`` (trying again cannot help)."""

    code: int | None
    error: str = ""
    retry_after: float | None = None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


class Signer:
    """Signs bodies with ``ENVFLOW_WEBHOOK_SECRET`` (``whsec_<base64>``); without one, signs nothing."""

    def __init__(self, secret: str) -> None:
        self._webhook = None
        self.problem = ""
        if secret:
            from standardwebhooks import Webhook

            try:
                self._webhook = Webhook(secret)
            except Exception:  # noqa: BLE001 - whatever the library says could quote the key
                self.problem = "ENVFLOW_WEBHOOK_SECRET is not whsec_ followed by base64; webhooks go unsigned"

    def headers(self, delivery_id: str, body: str, now: float) -> dict[str, str]:
        """The Standard Webhooks headers of one try."""
        ts = int(now)
        out = {"webhook-id": delivery_id, "webhook-timestamp": str(ts)}
        if self._webhook is not None:
            out["webhook-signature"] = self._webhook.sign(delivery_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)
        return out


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds, or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def post(url: str, body: str, headers: dict[str, str], timeout: float) -> Answer:
    """POST ``body`` (JSON) to ``url``; never raises for what the network or the receiver does."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Answer(None, "not an http(s) URL")
    deadline = time.monotonic() + timeout
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    data = body.encode()
    all_headers = {"content-type": "application/json", "user-agent": USER_AGENT, **headers}
    if parts.username:  # credentials in the URL are the receiver's Basic auth, as curl sends them
        import base64
        from urllib.parse import unquote

        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        all_headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
    try:
        conn.request("POST", path, body=data, headers=all_headers)
        if conn.sock is not None:  # the rest of the request's time, not a fresh timeout per read
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        response = conn.getresponse()
        text = response.read(MAX_BODY).decode("utf-8", "replace")
        code = response.status
        wait = retry_after(response.getheader("retry-after"), time.time())
    except TimeoutError:
        return Answer(None, f"no answer within {timeout:g}s")
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, f"{type(e).__name__}: {e}"[:300])
    finally:
        conn.close()
    error = "" if 200 <= code < 300 else f"HTTP {code}" + (f": {' '.join(text.split())[:200]}" if text.strip() else "")
    return Answer(code, error, wait)
