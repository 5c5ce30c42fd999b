"""The UI's pages (GET): runs, a run and its live output, deployments, workers and queues, health, metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import schedules
from ..errors import DeploymentNotFound, EnvflowError
from ..flow_run import FlowRun
from ..models import DeploymentRecord, RunState
from ..output import Entry, dropped_before
from ..redaction import redact_text
from ..waits import Waiting
from . import chart, fleet, forms, overview
from .context import see_other, ui_of
from .listing import SINCE, RunsView, find_rows, recent_records, recent_runs
from .stream import EventStream
from .strip import durations

if TYPE_CHECKING:
    from ..client import Client

STRIP_RUNS = 40
HISTORY_RUNS = 100  # a deployment page's duration chart
NEXT_SLOTS = 3


def _rows(request: Request) -> tuple[list, RunsView, str | None, str]:
    ui = ui_of(request)
    view = RunsView.parse(request.query_params)
    try:
        rows, cursor = find_rows(ui.client, view)
        return rows, view, cursor, ""
    except (DeploymentNotFound, EnvflowError) as e:  # an unknown deployment, a cursor not ours
        return [], view, None, str(e)


def runs_page(request: Request) -> Response:
    ui = ui_of(request)
    rows, view, cursor, problem = _rows(request)
    deployments = ui.client.deployments()
    return ui.render(request, "runs.html", nav="runs", rows=rows, view=view, problem=problem,
                     deployments=[d.name for d in deployments], tags=sorted({t for d in deployments for t in d.tags}),
                     queues=sorted({d.queue for d in deployments}), ranges=list(SINCE), query=view.query(),
                     next_query=view.next_query(cursor) if cursor else None, previous_query=view.previous_query(),
                     now=time.time())


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
    return ui.render(request, "run.html", nav="runs", run=flow_run.record(), now=time.time(),
                     hooks=_hook_deliveries(ui.client, flow_run.id))


def _hook_deliveries(client: Client, run_id: str) -> list[dict[str, str]]:
    """The run's hook deliveries as its page lists them, webhook URLs' credentials hidden."""
    from ..store.hooks import hook_store

    rows = hook_store(client.redis, client.settings).deliveries(run_id=run_id)
    return [{**d, "target": client.settings.redactor.text(d.get("target", ""))} for d in rows]


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
            if isinstance(record, Waiting):
                yield f"» {record.message}\n"
                continue
            if isinstance(record, Entry):
                dropped = dropped_before(last, record)
                if dropped:
                    yield f"» {dropped}\n"
                yield "".join(line.text + ("" if line.partial else "\n") for line in record.lines())
            last = record.next_id

    return StreamingResponse(text(), media_type="text/plain; charset=utf-8", headers={
        "content-disposition": f'inline; filename="run-{flow_run.id}.txt"', "cache-control": "no-store"})


def _deployment_view(ui, record: DeploymentRecord, paused: set[str], now: float, runs: int) -> dict:  # type: ignore[no-untyped-def]
    is_paused = record.name in paused
    upcoming = [] if is_paused else sorted(
        t for s in record.schedules for t in schedules.upcoming(s, now, NEXT_SLOTS))[:NEXT_SLOTS]
    recent = recent_records(ui.client, record.name, None, runs)
    return {
        "record": record,
        "paused": is_paused,
        "schedules": [schedules.describe(s) for s in record.schedules],
        "next_slots": upcoming,
        "env_vars": ui.settings.redactor.mapping(record.env_vars),
        "durations": durations(recent, now),
        "recent": recent,
    }


def deployments_page(request: Request) -> Response:
    ui = ui_of(request)
    now, paused = time.time(), ui.client.paused_deployments()
    views = [_deployment_view(ui, d, paused, now, STRIP_RUNS) for d in ui.client.deployments()]
    return ui.render(request, "deployments.html", nav="deployments", deployments=views, now=now)


def deployment_page(request: Request) -> Response:
    """A deployment's page; ``?from=<run id>`` fills the run form with that run's parameters."""
    name = request.path_params["name"]
    source = request.query_params.get("from")
    if not source:
        return render_deployment(request, name)
    run = ui_of(request).client.get_run(source).record()
    return render_deployment(request, name, form=forms.prefilled(run.parameters, run.timeout))


def render_deployment(request: Request, name: str, *, status: int = 200, error: str = "",
                      form: dict[str, str] | None = None) -> Response:
    """The deployment's page: details, run form (with ``error`` and the values sent), strip, recent runs."""
    ui = ui_of(request)
    record = ui.client.get_deployment(name)
    now = time.time()
    view = _deployment_view(ui, record, ui.client.paused_deployments(), now, HISTORY_RUNS)
    view["capable"] = ui.client.capable_workers(record)
    rows = recent_runs(ui.client, record.name, None, 20)
    return ui.render(request, "deployment.html", status=status, nav="deployments", d=view, rows=rows, now=now,
                     fields=forms.fields(record), takes_more=forms.takes_more(record), field_prefix=forms.FIELD_PREFIX,
                     error=error, form=form or {})


def workers_page(request: Request) -> Response:
    ui = ui_of(request)
    return ui.render(request, "workers.html", nav="workers", workers=fleet.workers(ui.client),
                     queues=fleet.queues(ui.client), limits=ui.client.limits(), now=time.time())


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
    """The overview: counts by state, runs per span, what runs, waits and failed, the fleet."""
    ui = ui_of(request)
    chart_range = request.query_params.get("range", "24h")
    chart_range = chart_range if chart_range in overview.RANGES else "24h"
    view = overview.read(ui.client, chart_range)
    return ui.render(request, "overview.html", nav="overview", view=view, chart_range=chart_range,
                     ranges=list(overview.RANGES), state_members=list(RunState), chart_order=chart.ORDER,
                     chart=chart.runs_chart(view.chart, view.chart_start, view.chart_width), now=time.time())


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
