"""What every CLI command shares: settings read once, the database, and the error edge."""

from __future__ import annotations

import sys

from rich.console import Console

from newsletter import runtime as composition

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


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


def render_settings():  # type: ignore[no-untyped-def]
    return runtime.render_settings
