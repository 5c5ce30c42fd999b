"""The scheduler's commands: ``envflow scheduler start``."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add the scheduler's commands to the envflow CLI."""

    @cli.group("scheduler")
    def scheduler_group() -> None:
        """Run the scheduler service."""
