"""``envflow ui``: serve the web UI and ``/metrics``."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import click

from ..cli.base import fail, status
from ..errors import ConfigError
from ..settings import get_settings
from .security import check_bind, is_loopback

EXTRA = ("starlette", "uvicorn", "jinja2", "prometheus_client")


def _missing_extra() -> list[str]:
    import importlib.util

    return [name for name in EXTRA if importlib.util.find_spec(name) is None]


def health(host: str, port: int) -> int:
    """0 when a UI answers ``/healthz`` on ``host:port`` with 200 (its Redis reachable), else 1."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in target and not target.startswith("["):
        target = f"[{target}]"
    try:
        with urllib.request.urlopen(f"http://{target}:{port}/healthz", timeout=5) as response:
            return 0 if response.status == 200 else 1
    except (OSError, urllib.error.URLError) as e:
        click.echo(f"unhealthy: {e}", err=True)
        return 1


@click.command("ui")
@click.option("--host", help="Address to bind (default ENVFLOW_UI_HOST, 127.0.0.1); not loopback needs ENVFLOW_UI_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default ENVFLOW_UI_PORT, 8080).")
@click.option("--check", is_flag=True, help="Only check that a UI answers /healthz there (exit 0 or 1).")
def ui(host: str | None, port: int | None, check: bool) -> None:
    """Serve the web UI: runs with their live output, deployments, workers; /metrics for Prometheus."""
    from ..undumpable import make_undumpable

    make_undumpable()  # it holds the Redis URL and the UI token
    settings = get_settings()
    host = host or settings.ui_host
    port = port or settings.ui_port
    if check:
        sys.exit(health(host, port))
    missing = _missing_extra()
    if missing:
        fail(f"envflow ui needs its extra ({', '.join(missing)} missing): pip install 'envflow[ui]'")
    try:
        check_bind(host, settings.ui_token)
    except ConfigError as e:
        fail(str(e))
    import uvicorn

    from .app import create_app

    app = create_app(settings.model_copy(update={"ui_host": host}))
    shown = f"[{host}]" if ":" in host else host
    status(f"envflow ui on http://{shown}:{port}/" + ("" if settings.ui_token else " (loopback only, no token)")
           + ("" if is_loopback(host) else "; it asks for ENVFLOW_UI_TOKEN"))
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), server_header=False,
                proxy_headers=False, access_log=False, timeout_graceful_shutdown=3)
