"""What every handler of the web UI shares: the ``UI`` state, and small helpers on requests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from ..client import Client
from ..settings import Settings
from .metrics import Metrics
from .security import CSRF_FIELD, Guard
from .stream import StreamSlots

MAX_FORM_BYTES = 1024 * 1024


@dataclass
class UI:
    """What every handler shares: the client, the access rules, the templates, metrics, stream slots."""

    client: Client
    settings: Settings
    guard: Guard
    templates: Environment
    metrics: Metrics
    slots: StreamSlots

    @cached_property
    def health_redis(self) -> Any:
        """The client's Redis, tried once per call: /healthz answers 503 during a failover at once."""
        from ..connection import single_attempt

        return single_attempt(self.client.redis)

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page, with what the layout needs: this browser's CSRF token, whether a token is in use."""
        html = self.templates.get_template(name).render(
            request=request,
            csrf=self.csrf(request),
            csrf_field=CSRF_FIELD,
            token_login=bool(self.guard.token),
            page_lines=self.settings.ui_page_lines,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def csrf(self, request: Request) -> str:
        return self.guard.csrf_for(request.scope["state"]["csrf_cookie"])

    async def form(self, request: Request) -> dict[str, str]:
        """A POST's urlencoded fields, after its CSRF token is checked.

        :raises HTTPException: 403 for a missing or wrong CSRF token, 413 for a body over 1 MiB.
        """
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(413, "form too large")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=1000))
        if not self.guard.csrf_valid(request.scope, fields.get(CSRF_FIELD)):
            raise HTTPException(403, "this form is stale or came from another site (CSRF check failed): "
                                     "reload the page and try again")
        return fields


def ui_of(request: Request) -> UI:
    return request.app.state.ui  # type: ignore[no-any-return]


LOCAL_PATH = re.compile(r"/(?![/\\])[!-~]*")  # printable ASCII, no spaces or controls a browser would drop


def local_path(target: str | None, default: str) -> str:
    """``target`` if it is a path on this site (no scheme, no host, no ``//``), else ``default``."""
    if target and LOCAL_PATH.fullmatch(target) and "\\" not in target:
        return target
    return default


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)
