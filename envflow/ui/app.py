"""The web UI's application: its routes and error pages (the state handlers share: ``context.py``).

Pages are rendered on the server (Jinja, autoescaped); ``static/app.js`` (hand-written, no
build step) only refreshes fragments, streams a run's output and confirms buttons. Handlers
that talk to Redis are plain functions, run in Starlette's thread pool; a run's live output
has its own thread per stream (``stream.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..client import Client
from ..errors import DeploymentNotFound, EnvflowError, ParameterError, QueueError, RunNotFound
from ..settings import Settings
from ..states import LOOKS
from . import actions, pages
from .context import UI, ui_of
from .metrics import Metrics
from .security import Guard, GuardMiddleware, SessionEnds
from .stream import StreamSlots
from .views import environment

log = logging.getLogger("envflow.ui")
STATIC = Path(__file__).parent / "static"


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


def _states_css() -> str:
    return "".join(f".state-{s.value.lower()} {{ background: {look.colour}; }}\n" for s, look in LOOKS.items())


async def states_css(request: Request) -> Response:
    """Each state's badge colour, from the one table of how states look (``envflow/states.py``)."""
    return Response(_states_css(), media_type="text/css", headers={"cache-control": "max-age=300"})


def create_app(settings: Settings, client: Client | None = None) -> Starlette:
    """The UI's ASGI application.

    :param settings: the process's settings (token, page lines, stream limit).
    :param client: the client to use (default: one made from ``settings``).
    """
    client = client or Client(settings=settings)
    guard = Guard(settings.ui_token, settings.ui_host, session_ttl=settings.ui_session_ttl,
                  ends=SessionEnds(client.redis))
    ui = UI(client, settings, guard, environment(), Metrics(client), StreamSlots(settings.ui_max_streams))
    routes = [
        *actions.routes(),
        *pages.routes(),
        Route("/static/states.css", states_css),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=guard)],
        exception_handlers={HTTPException: _error_page, EnvflowError: _error_page},
    )
    app.state.ui = ui
    return app

