"""Migration 0020 (automations, automation_mails): up and down with data, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from newsletter.store import db
from subscribers import automation_mails, automations
from subscribers.subscriptions import add_subscriber
from tests.bouncekit import sent_issue
from tests.conftest import throwaway_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'walk.db'}"
        return
    yield from throwaway_postgres_database("newsletter_migrate")


def _config(engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def test_0020_adds_the_automations_and_walks_back_keeping_every_send(empty_database_url):
    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent = sent_issue(sessions, ["ann@example.com", "bob@example.com"])
        with db.transaction(sessions) as s:
            automations.set_welcome(s, "weekly", enabled=True, also_added=True)
            issue_id = s.execute(text("SELECT id FROM issues")).scalar_one()
            automations.add_step(s, "weekly", issue_id, 2)
            add_subscriber(s, "weekly", "cid@example.com", confirmed=True)
        with sessions() as s:
            assert automation_mails.mail_log(s, "weekly")[0] == 1  # cid's welcome

        def deliveries() -> list[tuple]:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text("SELECT id, email, status FROM deliveries ORDER BY id"))]

        before = deliveries()
        assert len(before) == len(sent) == 2
        down = ScriptDirectory.from_config(_config(engine)).get_revision("0020").down_revision
        assert isinstance(down, str)
        command.downgrade(_config(engine), down)
        schema = inspect(engine)
        assert not {"automations", "automation_mails"} & set(schema.get_table_names())
        assert "ix_subscriptions_list_status_confirmed" not in {i["name"] for i in schema.get_indexes("subscriptions")}
        assert deliveries() == before
        db.upgrade(engine)
        assert db.schema_is_current(engine) and deliveries() == before
        with sessions() as s:
            assert automations.overview(s, "weekly").welcome.id is None  # back, empty
    finally:
        engine.dispose()
