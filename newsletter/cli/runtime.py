"""What every CLI command shares: settings read once, the database, and the error edge."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.store import db

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class Runtime:
    """Lazily built settings and database handles for one CLI invocation.

    Every command refuses an empty, blank or short NEWSLETTER_SECRET_KEY (ConfigError, exit 1)
    before it does anything, `web`, `worker`, `send` and `inbound` among them; only `doctor`
    sets ``check_secret_key`` false first, to report the key instead of stopping at it.
    """

    check_secret_key = True

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_environ(os.environ, check_secret_key=self.check_secret_key)

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        try:
            current = db.schema_is_current(self.engine)
        except OperationalError as exc:
            raise ConfigError(f"NEWSLETTER_DATABASE_URL: cannot connect: {exc.orig}") from None
        if not current:
            raise ConfigError(
                "NEWSLETTER_DATABASE_URL: the database schema is missing or out of date; run `newsletter db upgrade`"
            )
        return db.session_factory(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with db.transaction(self.sessions) as session:
            yield session


runtime = Runtime()


def print_last_line(value: object) -> None:
    """Print a value alone on the last line of stdout, for scripts (`id=$(newsletter ... | tail -1)`)."""
    sys.stdout.flush()
    print(value, flush=True)


def render_settings():  # type: ignore[no-untyped-def]
    from newsletter.content.issues import RenderSettings

    s = runtime.settings
    return RenderSettings.create(base_url=s.base_url, postal_address=s.postal_address, user_template_dir=s.template_dir)
