"""Hiding secrets wherever envflow shows a value: ``envflow config``, deployment and env
displays, error messages.

Two rules, applied together:

- a value whose *name* matches ``ENVFLOW_SECRET_PATTERNS`` is shown as ``***``;
- in any other value, credentials inside URL-shaped text are hidden whatever the name:
  the password of ``scheme://user:password@host`` (a user alone, often a token, is hidden
  whole, as pip does) and query parameters that carry one (``?password=``, ``?token=``...).

Every display goes through :class:`Redactor` (or :func:`redact_text` where no settings are
at hand), so the rules live here only.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from urllib.parse import unquote

MASK = "***"
DEFAULT_SECRET_PATTERNS = "*TOKEN*,*PASSWORD*,*PASSWD*,*SECRET*,*KEY*,*CREDENTIAL*"
# Query parameter names that carry credentials even where the name patterns do not say so.
_QUERY_SECRETS = ("PASS", "PWD", "AUTH", "AUTHORIZATION", "SIG", "SIGNATURE", "X-AMZ-SIGNATURE")
# scheme://rest-of-url, up to whitespace or a quote (URLs inside longer text and messages).
_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"<>]*)")


def _globs(patterns: str) -> tuple[str, ...]:
    return tuple(p.strip().upper() for p in patterns.split(",") if p.strip())


class Redactor:
    """Redaction with one set of secret name patterns (``ENVFLOW_SECRET_PATTERNS``).

    :param patterns: ``,``-separated, case-insensitive name globs.
    """

    def __init__(self, patterns: str = DEFAULT_SECRET_PATTERNS) -> None:
        self.globs = _globs(patterns)

    def is_secret_name(self, name: str) -> bool:
        """Whether a variable's value is hidden whole wherever envflow shows it."""
        upper = name.upper()
        return any(fnmatch.fnmatchcase(upper, pattern) for pattern in self.globs)

    def value(self, name: str, value: str) -> str:
        """``value`` as shown under ``name``: ``***`` for a secret name, else with URL credentials hidden."""
        return MASK if self.is_secret_name(name) else self.text(value)

    def mapping(self, values: Mapping[str, str | None]) -> dict[str, str | None]:
        """Every value of a name -> value mapping as shown (``None``, "unset", stays ``None``)."""
        return {k: (None if v is None else self.value(k, v)) for k, v in values.items()}

    def text(self, text: str) -> str:
        """``text`` with the credentials of every URL in it hidden."""
        if "://" not in text:
            return text
        return _URL.sub(lambda m: m.group("scheme") + self._url_rest(m.group("rest")), text)

    def _url_rest(self, rest: str) -> str:
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        netloc, tail = rest[:cut], rest[cut:]
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
        path, question, query = tail.partition("?")
        if not question:
            return netloc + tail
        query, hash_, fragment = query.partition("#")
        return f"{netloc}{path}?{self._query(query)}{hash_}{fragment}"

    def _query(self, query: str) -> str:
        items = []
        for item in query.split("&"):
            key, eq, _ = item.partition("=")
            name = unquote(key).upper()
            if eq and (name in _QUERY_SECRETS or self.is_secret_name(name)):
                item = f"{key}={MASK}"
            items.append(item)
        return "&".join(items)


_default = Redactor()


def redact_text(text: str) -> str:
    """``text`` with the credentials of every URL in it hidden (default patterns)."""
    return _default.text(text)


def redact_url(url: str) -> str:
    """A URL as shown in messages: ``redis://user:***@host/0``, ``unix:///s.sock?password=***``.

    Never parses the port, so a malformed URL is shown rather than raising.
    """
    return _default.text(url)
