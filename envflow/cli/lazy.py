"""Command groups whose commands are imported only when one of them runs.

``envflow --help`` lists every command from the short help written here, and ``envflow run ls``
imports ``run.py`` alone: neither pays for the worker's, the scheduler's or the deployment
commands' imports.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .base import EnvflowGroup, summary


class LazyGroup(EnvflowGroup):
    """A group that imports a command (``"module:attribute"``) the first time it is asked for.

    :param lazy: command name -> (``"module:attribute"``, short help shown in listings).
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name][0].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, summary(command)))
            else:
                rows.append((name, self.lazy[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
