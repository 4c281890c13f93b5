"""A command group that imports a command's module only when that command runs.

Each top-level command of `newsletter` lives in its own module (``newsletter/cli/sends.py`` ...),
and most of them pull in a large part of the application: SQLAlchemy, Celery, the web app,
the renderer. Importing them all to answer one command made every command take a second or
more. :class:`LazyGroup` knows each command by an :class:`Entry` (module, attribute, and the
one-line help shown in ``newsletter --help``) and imports the module when the command is
run, or when its own ``--help`` is asked for. The group's listing uses the help kept in the
entry, so ``newsletter --help`` imports no command module at all
(tests/test_cli_startup.py checks that each entry's help is the command's own).

The command is built by Typer exactly as ``app.command(name)(function)`` or
``app.add_typer(sub_app, name=name)`` would build it, so its options, help and exit codes
are the same as if it had been registered up front.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup


class Entry(NamedTuple):
    """Where a command is defined: ``newsletter.cli.<module>.<attribute>``, a Typer app (a group
    of commands) or a function (one command); ``help`` is the first paragraph of its help."""

    module: str
    attribute: str
    help: str


class Placeholder(TyperCommand):
    """Stands for a command not imported yet, in the group's listing only."""


class LazyGroup(TyperGroup):
    """A Typer group whose commands, given in ``entries`` (in listing order), are imported on use."""

    entries: ClassVar[dict[str, Entry]] = {}
    package: ClassVar[str] = "newsletter.cli"

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False
        for name, entry in self.entries.items():
            # Known by name from the start: "No such command ... Did you mean" suggests them all.
            self.commands.setdefault(name, Placeholder(name=name, help=entry.help, callback=None))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, Placeholder) and not self._listing:
            command = self.commands[cmd_name] = self.load(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # The listing shows each command's name and help, which its placeholder carries.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def load(self, name: str) -> Any:
        """Import the command's module and build its click command the way Typer registers it."""
        entry = self.entries[name]
        target = getattr(importlib.import_module(f"{self.package}.{entry.module}"), entry.attribute)
        holder = typer.Typer(rich_markup_mode=self.rich_markup_mode, suggest_commands=self.suggest_commands)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name)(target)
        return typer.main.get_group(holder).commands[name]
