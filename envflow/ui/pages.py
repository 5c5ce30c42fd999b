"""The UI's pages (GET): runs, a run and its live output, deployments, workers and queues, health, metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import schedules
from ..errors import DeploymentNotFound, EnvflowError
from ..flow_run import FlowRun
from ..models import DeploymentRecord
from ..output import Entry, dropped_before
from ..redaction import redact_text
from . import fleet, forms
from .context import see_other, ui_of
from .listing import recent_records, recent_runs
from .stream import EventStream
from .strip import strip_svg
from .views import STATES

STRIP_RUNS = 40
NEXT_SLOTS = 3


def _filters(request: Request) -> tuple[str, str, int]:
    state = request.query_params.get("state", "").upper()
    deployment = request.query_params.get("deployment", "").strip()
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        limit = 50
    return (state if state in STATES else ""), deployment, limit


def _rows(request: Request) -> tuple[list, str, str, int, str]:
    ui = ui_of(request)
    state, deployment, limit = _filters(request)
    try:
        rows, problem = recent_runs(ui.client, deployment, state, limit), ""
    except DeploymentNotFound as e:
        rows, problem = [], str(e)
    return rows, state, deployment, limit, problem


def runs_page(request: Request) -> Response:
    ui = ui_of(request)
    rows, state, deployment, limit, problem = _rows(request)
    names = [d.name for d in ui.client.deployments()]
    return ui.render(request, "runs.html", nav="runs", rows=rows, state=state, deployment=deployment, limit=limit,
                     problem=problem, deployments=names, query=request.url.query, now=time.time())


def runs_rows(request: Request) -> Response:
    rows, *_ = _rows(request)
    return ui_of(request).render(request, "_runs_rows.html", rows=rows, now=time.time())


def _run(request: Request) -> FlowRun:
    return ui_of(request).client.get_run(request.path_params["run_id"])


def run_page(request: Request) -> Response:
    ui = ui_of(request)
    flow_run = _run(request)
    if flow_run.id != request.path_params["run_id"]:
        return see_other(f"/runs/{flow_run.id}")  # an id prefix: the page's address is the full id
    return ui.render(request, "run.html", nav="runs", run=flow_run.record(), now=time.time())


def run_summary(request: Request) -> Response:
    return ui_of(request).render(request, "_run_summary.html", run=_run(request).record(), now=time.time())


async def run_events(request: Request) -> Response:
    ui = ui_of(request)
    flow_run = await run_in_threadpool(_run, request)
    if not ui.slots.take():
        return PlainTextResponse("too many live streams (ENVFLOW_UI_MAX_STREAMS); try again later\n", status_code=503,
                                 headers={"retry-after": "10"})
    return EventStream(flow_run, request.headers.get("last-event-id"), ui.slots)  # type: ignore[return-value]


def run_output_text(request: Request) -> Response:
    """The run's whole history as plain text, as ``envflow run logs`` prints it (envflow's notes marked »)."""
    flow_run = _run(request)

    def text() -> Iterator[str]:
        last: tuple[int, int] | None = None
        for record in flow_run.records(timeout=0):
            if isinstance(record, Entry):
                dropped = dropped_before(last, record)
                if dropped:
                    yield f"» {dropped}\n"
                yield "".join(line.text + ("" if line.partial else "\n") for line in record.lines())
            last = record.next_id

    return StreamingResponse(text(), media_type="text/plain; charset=utf-8", headers={
        "content-disposition": f'inline; filename="run-{flow_run.id}.txt"', "cache-control": "no-store"})


def _deployment_view(ui, record: DeploymentRecord, paused: set[str], now: float, runs: int) -> dict:  # type: ignore[no-untyped-def]
    upcoming = sorted(t for s in record.schedules for t in schedules.upcoming(s, now, NEXT_SLOTS))[:NEXT_SLOTS]
    recent = recent_records(ui.client, record.name, None, runs)
    return {
        "record": record,
        "paused": record.name in paused,
        "schedules": [schedules.describe(s) for s in record.schedules],
        "next_slots": upcoming,
        "env_vars": ui.settings.redactor.mapping(record.env_vars),
        "strip": strip_svg(recent, now),
        "recent": recent,
    }


def deployments_page(request: Request) -> Response:
    ui = ui_of(request)
    now, paused = time.time(), ui.client.paused_deployments()
    views = [_deployment_view(ui, d, paused, now, STRIP_RUNS) for d in ui.client.deployments()]
    return ui.render(request, "deployments.html", nav="deployments", deployments=views, now=now)


def deployment_page(request: Request) -> Response:
    return render_deployment(request, request.path_params["name"])


def render_deployment(request: Request, name: str, *, status: int = 200, error: str = "",
                      form: dict[str, str] | None = None) -> Response:
    """The deployment's page: details, run form (with ``error`` and the values sent), strip, recent runs."""
    ui = ui_of(request)
    record = ui.client.get_deployment(name)
    now = time.time()
    view = _deployment_view(ui, record, ui.client.paused_deployments(), now, STRIP_RUNS)
    rows = recent_runs(ui.client, record.name, None, 20)
    return ui.render(request, "deployment.html", status=status, nav="deployments", d=view, rows=rows, now=now,
                     fields=forms.fields(record), takes_more=forms.takes_more(record), field_prefix=forms.FIELD_PREFIX,
                     error=error, form=form or {})


def workers_page(request: Request) -> Response:
    ui = ui_of(request)
    return ui.render(request, "workers.html", nav="workers", workers=fleet.workers(ui.client),
                     queues=fleet.queues(ui.client), now=time.time())


def healthz(request: Request) -> Response:
    try:
        ui_of(request).health_redis.ping()
    except Exception as e:  # any failure to reach Redis: unhealthy, said in one line
        return PlainTextResponse(f"redis unreachable: {type(e).__name__}\n", status_code=503)
    return PlainTextResponse("ok\n")


def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    try:
        body = ui_of(request).metrics.scrape()
    except (EnvflowError, RedisError) as e:
        return PlainTextResponse(f"cannot read the metrics: {redact_text(str(e))}\n", status_code=503)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def home(request: Request) -> Response:
    return see_other("/runs")


def routes() -> list[BaseRoute]:
    return [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/runs", runs_page),
        Route("/runs/rows", runs_rows),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/summary", run_summary),
        Route("/runs/{run_id}/events", run_events),
        Route("/runs/{run_id}/output.txt", run_output_text),
        Route("/deployments", deployments_page),
        Route("/deployments/{name:path}", deployment_page),
        Route("/workers", workers_page),
    ]
