"""What the UI changes (POST, each with its CSRF token): start and cancel runs, pause and resume
deployments and queues, log in and out. Each answers with a redirect to the page that shows the result."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import ParameterError
from . import forms
from .context import local_path, see_other, ui_of
from .pages import render_deployment


async def start_run(request: Request) -> Response:
    """Start a run from the deployment page's form; open its page (live), or show the form again with the error."""
    ui = ui_of(request)
    form = await ui.form(request)
    name = request.path_params["name"]

    def start() -> Response:
        record = ui.client.get_deployment(name)
        try:
            flow_run = ui.client.run(name, forms.parameters(record, form), timeout=forms.timeout(form))
        except ParameterError as e:
            return render_deployment(request, name, status=400, error=str(e), form=form)
        return see_other(f"/runs/{flow_run.id}")

    return await run_in_threadpool(start)


async def rerun(request: Request) -> Response:
    """Start a new run of the run's deployment with the run's own parameters; open its page."""
    ui = ui_of(request)
    await ui.form(request)

    def start() -> str:
        record = ui.client.get_run(request.path_params["run_id"]).record()
        return ui.client.run(record.deployment, record.parameters).id

    return see_other(f"/runs/{await run_in_threadpool(start)}")


async def cancel_run(request: Request) -> Response:
    ui = ui_of(request)
    await ui.form(request)
    run_id = request.path_params["run_id"]

    def cancel() -> str:
        flow_run = ui.client.get_run(run_id)
        ui.client.cancel(flow_run.id, "cancelled from the web UI")
        return flow_run.id

    return see_other(f"/runs/{await run_in_threadpool(cancel)}")


def _toggle(kind: str, pause: bool):  # type: ignore[no-untyped-def]
    async def handler(request: Request) -> Response:
        ui = ui_of(request)
        form = await ui.form(request)
        name = request.path_params["name"]
        client = ui.client
        if kind == "deployment":
            call = client.pause_deployment if pause else client.resume_deployment
            back = "/deployments"
        else:
            call = client.pause_queue if pause else client.resume_queue
            back = "/workers"
        await run_in_threadpool(call, name)
        return see_other(local_path(form.get("next"), back))

    return handler


async def login_page(request: Request) -> Response:
    ui = ui_of(request)
    if not ui.guard.token:
        return see_other("/runs")
    target = local_path(request.query_params.get("next"), "/runs")
    return ui.render(request, "login.html", next=target, error="")


async def login(request: Request) -> Response:
    ui = ui_of(request)
    form = await ui.form(request)
    target = local_path(form.get("next"), "/runs")
    if not ui.guard.token_matches(form.get("token", "")):
        return ui.render(request, "login.html", status=401, next=target, error="wrong token")
    response = see_other(target)
    response.headers.append("set-cookie", ui.guard.session_cookie(secure=request.url.scheme == "https"))
    return response


async def logout(request: Request) -> Response:
    ui = ui_of(request)
    await ui.form(request)
    await run_in_threadpool(ui.guard.end_session, request.scope)
    response = see_other("/login")
    response.headers.append("set-cookie", "envflow_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
    return response


def routes() -> list[BaseRoute]:
    # Before the pages: /deployments/{name:path} would take ".../run" as part of a name.
    return [
        Route("/deployments/{name:path}/run", start_run, methods=["POST"]),
        Route("/deployments/{name:path}/pause", _toggle("deployment", True), methods=["POST"]),
        Route("/deployments/{name:path}/resume", _toggle("deployment", False), methods=["POST"]),
        Route("/queues/{name}/pause", _toggle("queue", True), methods=["POST"]),
        Route("/queues/{name}/resume", _toggle("queue", False), methods=["POST"]),
        Route("/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
        Route("/runs/{run_id}/rerun", rerun, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
