"""What a flow process reports on its result pipe, read within bounds.

The report is one JSON object written by the bootstrap (``worker/flowenv/bootstrap.py``):
``{"ok":true,"result":...}``, ``{"ok":true,"result_error":"..."}`` or
``{"ok":false,"stage":"...","error_type":"...","error":"..."}``. A flow can make it as big as it
likes (a 100 MB exception message, a 100 MB result), so the worker keeps at most a bound of it:
a result over ``ENVFLOW_RESULT_MAX_BYTES`` is not stored (the run says why), an error text over
``ENVFLOW_ERROR_MAX_BYTES`` keeps its head and a note. Bytes past the bound are read and dropped,
so the flow never blocks on a full pipe.
"""

from __future__ import annotations

import json
from typing import Any

from envflow.settings import Settings

# Room for the report's own keys, the error type and the start of the error text.
SLACK = 64 * 1024
_ERROR_TYPE_START = b'"error_type":"'
_ERROR_START = b'"error":"'


class ReportBuffer:
    """The first ``limit`` bytes of the report, and how many bytes came in all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = max(settings.result_max_bytes, settings.error_max_bytes) + SLACK
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def whole(self) -> bool:
        return self.total == len(self.data)

    def parsed(self) -> dict[str, Any] | None:
        """The report as a dict (a cut one rebuilt from its head), or None when the flow reported nothing."""
        if not self.data:
            return None
        if self.whole:
            try:
                value = json.loads(self.data)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
        return self._from_head()

    def _from_head(self) -> dict[str, Any] | None:
        head = bytes(self.data)
        if head.startswith(b'{"ok":true'):
            return {"ok": True, "result_error": too_big("the result", self.total, self.settings.result_max_bytes,
                                                        "RESULT")}
        if not head.startswith(b'{"ok":false'):
            return None
        type_start = head.find(_ERROR_TYPE_START)
        error_type = _string_prefix(head[type_start + len(_ERROR_TYPE_START):], 1024) if type_start >= 0 else ""
        start = head.find(_ERROR_START)
        error = _string_prefix(head[start + len(_ERROR_START):], self.settings.error_max_bytes) if start >= 0 else ""
        return {"ok": False, "error_type": error_type or "Exception", "error": error, "error_bytes": self.total}


def _string_prefix(fragment: bytes, limit: int) -> str:
    """The text of a JSON string's body, cut anywhere (perhaps inside an escape or a UTF-8 sequence),
    up to about ``limit`` bytes of it. No regular expression: one over megabytes costs a gigabyte."""
    end = _string_end(fragment[:limit + 16])
    body = fragment[:min(end, limit + 16)]
    for cut in range(min(len(body), 12) + 1):  # drop a partial escape or character at the end
        try:
            return str(json.loads(b'"' + body[:len(body) - cut] + b'"'))
        except ValueError:
            continue
    return body.decode("utf-8", "replace")


def _string_end(fragment: bytes) -> int:
    """Where a JSON string's body ends (its closing quote), or its length when it is cut before."""
    start = 0
    while (end := fragment.find(b'"', start)) >= 0:
        backslashes = 0
        while end - backslashes > 0 and fragment[end - backslashes - 1] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:
            return end
        start = end + 1
    return len(fragment)


def too_big(what: str, size: int, limit: int, setting: str) -> str:
    """The note that replaces a result too big to store."""
    return (f"{what} was {size:,} bytes of JSON, over ENVFLOW_{setting}_MAX_BYTES ({limit:,}): not stored; "
            "return less, or write it to a file and return its path")


def capped_text(text: str | None, limit: int, setting: str, size: int | None = None) -> str | None:
    """``text`` within ``limit`` UTF-8 bytes: its head and a note saying how big it was.

    :param size: the text's size when it arrived already cut.
    """
    if text is None:
        return None
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit and size is None:
        return text
    head = data[:limit].decode("utf-8", "ignore")
    return f"{head}\n[cut: {size or len(data):,} bytes in all, over ENVFLOW_{setting}_MAX_BYTES ({limit:,})]"


def capped_result(result: Any, limit: int) -> tuple[str | None, str | None]:
    """The result's JSON text and, when it is over ``limit`` bytes, instead the note saying why not."""
    text = json.dumps(result)
    if len(text.encode("utf-8")) > limit:
        return None, too_big("the result", len(text.encode("utf-8")), limit, "RESULT")
    return text, None
