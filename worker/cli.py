"""The worker's commands: ``envflow worker start`` (alias ``envflow agent start``)."""

from __future__ import annotations

import logging
import sys

import click


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("envflow")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


@click.command("start")
@click.option("--queue", "-q", "queues", multiple=True, help="Queue to serve (repeatable; default ENVFLOW_QUEUE).")
@click.option("--burst", is_flag=True, help="Run the queued runs, then exit.")
@click.option("--name", help="Worker name (default: <hostname>.<n>, stable across restarts).")
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
    redis = connect(settings.redis_url)
    with wrap_errors(redis):
        redis.ping()
    try:
        identity = acquire(settings.state_dir, name)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    worker = FlowWorker(list(queues) or [settings.queue], name=identity.name, connection=redis, settings=settings)
    with wrap_errors(redis):
        # RQ's scheduler runs in the worker's maintenance thread, not in a forked process.
        worker.work(burst=burst, logging_level="WARNING", max_jobs=max_jobs)


@click.command("health")
@click.option("--name", help="Worker name to check (default: any worker of this host).")
def health(name: str | None) -> None:
    """Exit 0 when Redis answers and a live worker of this host (or NAME) is registered.

    Meant for container health checks: `envflow worker health`.
    """
    import socket

    from rq.worker import Worker

    from envflow.connection import connect, wrap_errors
    from envflow.jobs import SERIALIZER
    from envflow.settings import get_settings

    redis = connect(get_settings().redis_url)
    with wrap_errors(redis):
        redis.ping()
        workers = Worker.all(connection=redis, serializer=SERIALIZER)
    host = socket.gethostname()
    mine = [w for w in workers if (w.name == name if name else w.hostname == host)]
    if not mine:
        raise click.ClickException(f"Redis answers, but no worker {'named ' + name if name else 'of host ' + host} is registered")
    click.echo(", ".join(f"{w.name}: {w.get_state()}" for w in mine))


def register(cli: click.Group) -> None:
    """Add the worker's commands to the envflow CLI."""

    @cli.group("worker")
    def worker_group() -> None:
        """Run workers."""

    worker_group.add_command(start)
    worker_group.add_command(health)

    @cli.group("agent")
    def agent_group() -> None:
        """Alias of `envflow worker` (for users of the reference tool's `agent start`)."""

    agent_group.add_command(start)
