"""Shared fixtures: real SQLite and PostgreSQL databases, and the CLI run as a real process.

PostgreSQL tests use the server at 127.0.0.1:5432 (trust auth) with one throwaway
database per test run. Without that server they skip with a one-line reason, except under
CI (CI=true), where a missing service is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from newsletter.store import db
from newsletter.store.models import Base

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_service(reason: str) -> NoReturn:
    """Skip with a one-line reason on a laptop; fail under CI, where every service must be there."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def throwaway_postgres_database(prefix: str) -> Iterator[str]:
    """Create an empty PostgreSQL database, yield its SQLAlchemy URL, drop it (for a fixture to ``yield from``)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        need_service(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).strip().splitlines()[0]}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    yield from throwaway_postgres_database("newsletter_test")


@pytest.fixture(scope="session")
def _pg_engine(postgres_url: str):
    engine = db.make_engine(postgres_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a fresh SQLite file, or the run's PostgreSQL database truncated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        engine = db.make_engine(url)
        db.upgrade(engine)
        engine.dispose()
        yield url
        return
    engine = request.getfixturevalue("_pg_engine")
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine.url.render_as_string(hide_password=False)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(database_url)
    yield db.session_factory(engine)
    engine.dispose()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Cli:
    """Runs `newsletter ...` as a real process with its own environment."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"newsletter {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        return result


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The CLI on its default database: SQLite under NEWSLETTER_VAR_DIR, schema created."""
    runner = Cli(env=clean_environ(NEWSLETTER_VAR_DIR=str(tmp_path / "var")), cwd=tmp_path)
    runner("db", "upgrade")
    return runner


@pytest.fixture
def cli_any_db(tmp_path: Path, database_url: str) -> Cli:
    """The CLI on each database in turn (SQLite and PostgreSQL), schema created."""
    env = clean_environ(NEWSLETTER_VAR_DIR=str(tmp_path / "var"), NEWSLETTER_DATABASE_URL=database_url)
    return Cli(env=env, cwd=tmp_path)


def _system_redis() -> str:
    """Database 15 of the machine's Redis; under pytest-xdist each worker process has its own (13, 12, ...).

    14 is left to the benchmarks."""
    if "NEWSLETTER_TEST_REDIS_URL" in os.environ:
        return os.environ["NEWSLETTER_TEST_REDIS_URL"]
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    return f"redis://127.0.0.1:6379/{15 if worker == 0 else 13 - (worker - 1)}"


SYSTEM_REDIS = _system_redis()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The machine's Redis server (one database of it, emptied before and after each test)."""
    import redis

    client = redis.Redis.from_url(SYSTEM_REDIS, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        need_service(f"Redis not reachable at {SYSTEM_REDIS}: {exc}")
    yield SYSTEM_REDIS
    client.flushdb()


@pytest.fixture
def newsroom(tmp_path: Path, redis_url: str):
    """Capture SMTP server + Redis + SQLite + CLI, and worker processes started on demand."""
    yield from _newsroom(tmp_path, redis_url, f"sqlite:///{tmp_path / 'var' / 'newsletter.db'}")


@pytest.fixture
def newsroom_any_db(tmp_path: Path, redis_url: str, database_url: str):
    """The same on each database in turn (SQLite and PostgreSQL)."""
    yield from _newsroom(tmp_path, redis_url, database_url)


def _newsroom(tmp_path: Path, redis_url: str, database_url: str):
    from newsletter.devtools.smtp_capture import CaptureServer
    from tests.sendkit import Newsroom

    capture = CaptureServer(port=0)
    capture.start()
    env = clean_environ(
        NEWSLETTER_VAR_DIR=str(tmp_path / "var"),
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_BROKER_URL=redis_url,
        NEWSLETTER_SMTP_URL=f"smtp://127.0.0.1:{capture.port}",
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_POSTAL_ADDRESS="1 Example Street, Example City",
        NEWSLETTER_BATCH_SIZE="25",
        NEWSLETTER_RETRY_DELAY="0.5",
    )
    room = Newsroom(cli=Cli(env=env, cwd=tmp_path), capture=capture, tmp=tmp_path)
    room.cli("db", "upgrade")
    yield room
    room.stop_all()
    capture.stop()
