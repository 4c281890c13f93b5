"""Alembic environment: runs on the engine handed over by newsletter.store.db.upgrade."""

from alembic import context
from sqlalchemy import Engine

from newsletter.store.models import Base

config = context.config


def run_migrations_online() -> None:
    engine: Engine | None = config.attributes.get("engine")
    if engine is None:
        from sqlalchemy import create_engine

        url = config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("no engine handed over and no sqlalchemy.url configured")
        engine = create_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode copies a table and drops the old one: with foreign keys on, dropping a
            # table that others reference would fail, or cascade into them. Off for the
            # migration (a pragma, so outside any transaction), checked and back on after.
            # On the driver's connection: SQLAlchemy's would BEGIN first (newsletter.store.db), and
            # SQLite ignores this pragma inside a transaction.
            raw = connection.connection.driver_connection
            assert raw is not None, "an open connection has its driver's"
            raw.execute("PRAGMA foreign_keys=OFF")
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        if sqlite:
            raw = connection.connection.driver_connection
            assert raw is not None, "an open connection has its driver's"
            broken = raw.execute("PRAGMA foreign_key_check").fetchall()
            raw.execute("PRAGMA foreign_keys=ON")
            if broken:
                raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


run_migrations_online()
