"""The worker's commands: ``envflow worker start`` (alias ``envflow agent start``)."""

from __future__ import annotations

import click

from envflow.cli.base import EnvflowGroup
from envflow.logs import configure_logging


@click.command("start")
@click.option("--queue", "-q", "queues", multiple=True, help="Queue to serve (repeatable; default ENVFLOW_QUEUE).")
@click.option("--burst", is_flag=True, help="Run the queued runs, then exit.")
@click.option("--name", help="Worker name (default: <hostname>.<slot>.<random>, unique per worker process).")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after this many runs.")
def start(queues: tuple[str, ...], burst: bool, name: str | None, max_jobs: int | None) -> None:
    """Start a worker: it takes runs from its queues and runs each flow in its environment.

    SIGTERM (docker stop) or Ctrl-C stops it gracefully: it takes no new runs and gives the
    running flow ENVFLOW_SHUTDOWN_GRACE seconds to finish before cancelling it; a second
    signal stops the flow at once.
    """
    from envflow.connection import connect, wrap_errors
    from envflow.settings import get_settings

    from .identity import acquire
    from .worker import FlowWorker

    settings = get_settings()
    configure_logging(settings.log_level)
    _undumpable()
    redis = connect(settings.redis_url)
    with wrap_errors(redis):
        redis.ping()
    try:
        identity = acquire(settings.state_dir, name)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    worker = FlowWorker(list(queues) or [settings.queue], name=identity.name, connection=redis, settings=settings,
                        predecessor=identity.predecessor)
    with wrap_errors(redis):
        # RQ's scheduler runs in the worker's maintenance thread, not in a forked process.
        worker.work(burst=burst, logging_level="WARNING", max_jobs=max_jobs)


def _undumpable() -> None:
    """Flows run as the worker's user: keep them out of the worker's /proc entries (its environment,
    which holds the Redis URL, and its memory). Children become dumpable again when they exec."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        pass  # not Linux


@click.command("health")
@click.option("--name", help="Worker name to check (default: the workers running with this state dir).")
def health(name: str | None) -> None:
    """Exit 0 when Redis answers and this machine's (container's) worker is registered there:
    NAME, or every worker alive with this ENVFLOW_STATE_DIR.

    Meant for container health checks: `envflow worker health`.
    """
    from rq.worker import Worker

    from envflow.cli.base import printable
    from envflow.connection import connect, wrap_errors
    from envflow.settings import get_settings
    from envflow.store.jobs import SERIALIZER

    from .identity import live_names

    settings = get_settings()
    wanted = [name] if name else list(live_names(settings.state_dir))
    if not wanted:
        import socket

        raise click.ClickException(f"no worker of host {socket.gethostname()} is running with the state dir "
                                   f"{settings.state_dir}")
    redis = connect(settings.redis_url)
    with wrap_errors(redis):
        redis.ping()
        registered = {w.name: w for w in Worker.all(connection=redis, serializer=SERIALIZER)}
    missing = [n for n in wanted if n not in registered]
    if missing:
        raise click.ClickException(f"Redis answers, but worker {', '.join(missing)} is not registered there")
    click.echo(printable(", ".join(f"{n}: {registered[n].get_state()}" for n in wanted)))


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Live workers: state, queues, current run, and their warm processes (env, preloads, memory)."""
    from envflow.cli.base import emit_json, get_client, printable, table

    workers = get_client().workers()
    if as_json:
        emit_json(workers)
        return
    if not workers:
        click.echo("no live workers", err=True)
        return
    rows = []
    for w in workers:
        warm = [f"{p['env']}{' [' + ','.join(p['preload']) + ']' if p['preload'] else ''} {p['mode']} "
                f"{p['rss'] / 2**20:.0f}MiB" for p in w.get("warm", [])]
        sandbox = w.get("sandbox") or {}
        rows.append([printable(w["name"]), printable(w["state"]), printable(",".join(w["queues"])),
                     printable((w["run"] or "-")[:8]), "on" if sandbox.get("on") else "OFF",
                     printable("; ".join(warm) or "-")])
    table(["WORKER", "STATE", "QUEUES", "RUN", "SANDBOX", "WARM"], rows)
    for w in workers:
        sandbox = w.get("sandbox") or {}
        if not sandbox.get("on"):
            click.echo(f"{printable(w['name'])}: {printable(sandbox.get('note') or 'no flow sandbox reported')}")


@click.group("worker", cls=EnvflowGroup)
def worker() -> None:
    """Run workers."""


@click.group("agent", cls=EnvflowGroup)
def agent() -> None:
    """Another name for `envflow worker`: `envflow agent start` starts a worker."""


worker.add_command(start)
worker.add_command(health)
worker.add_command(status)
agent.add_command(start)
