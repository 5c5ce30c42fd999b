"""The ``envflow`` entry point: the top-level group and where each command group lives.

Every group is imported only when it runs (``lazy.py``); the worker's and the scheduler's
commands live in their own packages (``envflow.worker``, ``envflow.scheduler``).
"""

from __future__ import annotations

import click

from .. import __version__
from .lazy import LazyGroup

COMMANDS = {
    "deployment": ("envflow.cli.deployment:deployment", "Register and run deployments (a flow plus its environment)."),
    "run": ("envflow.cli.run:run", "Inspect and control runs."),
    "hook": ("envflow.cli.hook:hook", "Site-wide hooks, and what hooks delivered."),
    "queue": ("envflow.cli.queue:queue", "Inspect, pause and resume queues."),
    "limit": ("envflow.cli.limit:limit", "Concurrency limits: at most N runs at once per tag or deployment."),
    "env": ("envflow.worker.env_cli:env", "Environments flows run in (as this machine's workers see them)."),
    "venv": ("envflow.worker.env_cli:venv", "Make venvs that work inside the workers."),
    "worker": ("envflow.worker.cli:worker", "Run workers."),
    "agent": ("envflow.worker.cli:agent", "Another name for `envflow worker`: `envflow agent start` starts a worker."),
    "scheduler": ("envflow.scheduler.cli:scheduler", "Run the scheduler service."),
    "up": ("envflow.cli.up:up", "The whole stack in one terminal, for development."),
    "ui": ("envflow.ui.cli:ui", "Serve the web UI (runs, live output, deployments, workers) and /metrics."),
    "config": ("envflow.cli.config:config", "Show the effective settings (ENVFLOW_* variables), secrets redacted."),
    "stats": ("envflow.cli.stats:stats", "Redis's memory by kind: runs, output, indexes, queues, deployments."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="envflow")
def cli(debug: bool) -> None:
    """Run Python flows in the conda env or venv each one needs, on RQ workers, with live output.

    \b
    Quick start:
      envflow up                                  # a private Redis, the scheduler and a worker
      envflow deployment create ./example-deployment.py
      envflow deployment run my-flow/example --follow

    Settings come from ENVFLOW_* variables; `envflow config` shows them.
    """
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG)


def main() -> None:
    cli(prog_name="envflow")
