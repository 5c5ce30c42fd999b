"""The web UI's application: its routes, the shared state they use, error pages.

Pages are rendered on the server (Jinja, autoescaped); ``static/app.js`` (hand-written, no
build step) only refreshes fragments, streams a run's output and confirms buttons. Handlers
that talk to Redis are plain functions, run in Starlette's thread pool; a run's live output
has its own thread per stream (``stream.py``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ..client import Client
from ..errors import DeploymentNotFound, EnvflowError, ParameterError, QueueError, RunNotFound
from ..settings import Settings
from .metrics import Metrics
from .security import CSRF_FIELD, Guard, GuardMiddleware
from .stream import StreamSlots
from .views import environment

log = logging.getLogger("envflow.ui")
STATIC = Path(__file__).parent / "static"
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


async def _error_page(request: Request, exc: Exception) -> Response:
    status, message = 500, "internal error"
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
    elif isinstance(exc, (RunNotFound, DeploymentNotFound)):
        status, message = 404, str(exc)
    elif isinstance(exc, ParameterError):
        status, message = 400, str(exc)
    elif isinstance(exc, QueueError):
        status, message = 503, str(exc)
    elif isinstance(exc, EnvflowError):
        status, message = 400, str(exc)
    if "text/html" not in request.headers.get("accept", ""):
        return PlainTextResponse(message + "\n", status_code=status)
    ui = ui_of(request)
    return ui.render(request, "error.html", status=status, status_code=status, message=message)


def create_app(settings: Settings, client: Client | None = None) -> Starlette:
    """The UI's ASGI application.

    :param settings: the process's settings (token, page lines, stream limit).
    :param client: the client to use (default: one made from ``settings``).
    """
    from . import actions, pages

    client = client or Client(settings=settings)
    guard = Guard(settings.ui_token, settings.ui_host)
    ui = UI(client, settings, guard, environment(), Metrics(client), StreamSlots(settings.ui_max_streams))
    routes = [
        *actions.routes(),
        *pages.routes(),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=guard)],
        exception_handlers={HTTPException: _error_page, EnvflowError: _error_page},
    )
    app.state.ui = ui
    return app

