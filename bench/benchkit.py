"""What the benchmarks share: the PostgreSQL server they make throwaway databases on, and those databases."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

#: The server a benchmark creates its throwaway databases on (BENCH_PG_URL; the local one by default).
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def database(kind: str, folder: Path, prefix: str = "newsletter_bench") -> Iterator[str]:
    """A database URL: a SQLite file in ``folder``, or a PostgreSQL database created here and dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'newsletter.db'}"
        return
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
