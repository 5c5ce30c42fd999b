"""The scheduler's commands: ``envflow scheduler start``."""

from __future__ import annotations

import click

from envflow.cli.base import EnvflowGroup
from envflow.logs import configure_logging

from .defaults import DEFAULT_GRACE, DEFAULT_TICK


@click.command("start")
@click.option("--tick", type=click.FloatRange(min=0.05, max=60), default=DEFAULT_TICK, show_default=True,
              help="Longest sleep between passes: how soon new, changed or paused deployments are seen.")
@click.option("--misfire-grace", type=click.FloatRange(min=0), default=DEFAULT_GRACE, show_default=True,
              help="Seconds a slot may be late and still run; older slots follow the deployment's missed_runs.")
@click.option("--name", help="Scheduler name in logs and locks (default: scheduler-<host>-<pid>).")
def start(tick: float, misfire_grace: float, name: str | None) -> None:
    """Start the scheduler: it turns deployment schedules into runs and reaps crashed runs.

    Run as many replicas as you like: each slot becomes exactly one run. At start it
    registers the deployment files ENVFLOW_DEPLOYMENTS names (a glob). SIGTERM or Ctrl-C
    stops it after the current pass.
    """
    from envflow.settings import get_settings
    from envflow.undumpable import make_undumpable

    from .service import SchedulerService

    make_undumpable()  # it holds the Redis URL; flows run as the same user
    settings = get_settings()
    configure_logging(settings.log_level)
    SchedulerService(settings, name=name, tick=tick, grace=misfire_grace).run()


@click.command("health")
def health() -> None:
    """Exit 0 when Redis answers and a scheduler of this host made a pass recently (container health checks)."""
    import socket

    from envflow.connection import connect, wrap_errors
    from envflow.settings import get_settings
    from envflow.store import keys

    redis = connect(get_settings().redis_url)
    host = socket.gethostname()
    with wrap_errors(redis):
        names = [k.decode() for k in redis.scan_iter(keys.scheduler("*"), count=1000)]
        hosts = redis.mget(names) if names else []
    mine = [n for n, h in zip(names, hosts) if h is not None and h.decode() == host]
    if not mine:
        raise click.ClickException(f"Redis answers, but no scheduler of host {host} made a pass recently")
    from envflow.cli.base import printable

    click.echo(printable(", ".join(n.removeprefix(keys.scheduler("")) for n in mine)))


@click.group("scheduler", cls=EnvflowGroup)
def scheduler() -> None:
    """Run the scheduler service."""


scheduler.add_command(start)
scheduler.add_command(health)
