"""PostgreSQL connections end a transaction a vanished process left open, so its row locks do not hold up the others."""

from __future__ import annotations

from sqlalchemy import text

from newsletter.store.db import make_engine


def test_a_transaction_left_idle_is_ended_by_the_server(postgres_url: str):
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SHOW idle_in_transaction_session_timeout")) == "1min"
    finally:
        engine.dispose()
    # A URL that brings its own options keeps them (and so decides for itself).
    separator = "&" if "?" in postgres_url else "?"
    own = make_engine(f"{postgres_url}{separator}options=-c%20idle_in_transaction_session_timeout%3D5s")
    try:
        with own.connect() as conn:
            assert conn.scalar(text("SHOW idle_in_transaction_session_timeout")) == "5s"
    finally:
        own.dispose()
