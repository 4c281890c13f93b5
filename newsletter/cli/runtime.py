"""What every CLI command shares: settings read once, the database, and the error edge."""

from __future__ import annotations

import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

from newsletter import runtime as composition

if TYPE_CHECKING:
    from rich.console import Console

    from newsletter.content.issues import RenderSettings


class LazyConsole:
    """A rich Console made when a command first prints through it: one that prints JSON, or
    nothing, never imports rich. ``rich`` is the Console itself (for a progress bar)."""

    def __init__(self, **options: Any) -> None:
        self._options = options

    @cached_property
    def rich(self) -> Console:
        from rich.console import Console

        return Console(**self._options)

    @property
    def width(self) -> int:
        return self.rich.width

    def print(self, *objects: Any, soft_wrap: bool | None = None) -> None:
        self.rich.print(*objects, soft_wrap=soft_wrap)


out = LazyConsole(highlight=False, soft_wrap=True, markup=False)
err = LazyConsole(stderr=True, highlight=False, soft_wrap=True, markup=False)


class Runtime(composition.Runtime):
    """The composition root (newsletter.runtime) for one CLI invocation, its parts built on first use.

    Every command refuses an empty, blank or short NEWSLETTER_SECRET_KEY (ConfigError, exit 1)
    before it does anything, `web`, `worker`, `send` and `inbound` among them; only `doctor`
    sets ``check_secret_key`` false first, to report the key instead of stopping at it. Every
    command that opens ``sessions`` first refuses a database it cannot reach or whose schema is
    missing or out of date (``check_schema``).
    """

    check_schema = True


runtime = Runtime()


def print_last_line(value: object) -> None:
    """Print a value alone on the last line of stdout, for scripts (`id=$(newsletter ... | tail -1)`)."""
    sys.stdout.flush()
    print(value, flush=True)


def render_settings() -> RenderSettings:
    return runtime.render_settings
