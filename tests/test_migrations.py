"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from newsletter import db
from newsletter.models import Base


def test_migrations_match_models_and_upgrade_is_repeatable(database_url):
    engine = db.make_engine(database_url)
    db.upgrade(engine)  # a second run is a no-op
    assert db.schema_is_current(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []
