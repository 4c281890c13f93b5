"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from newsletter.store import db
from newsletter.store.models import Base, BounceEvent, utcnow
from subscribers.bounces import record_bounce
from tests.bouncekit import sent_issue
from tests.conftest import throwaway_postgres_database


def test_migrations_match_models_and_upgrade_is_repeatable(database_url):
    engine = db.make_engine(database_url)
    db.upgrade(engine)  # a second run is a no-op
    assert db.schema_is_current(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own with no schema yet, to walk the migrations up and down in."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'walk.db'}"
        return
    yield from throwaway_postgres_database("newsletter_migrate")


def _downgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    command.downgrade(config, revision)


def _stored(engine: Engine) -> list[tuple]:
    """Every bounce event, oldest first: (kind, id, email, delivery_id, source, detail, created_at)."""
    columns = (
        BounceEvent.kind,
        BounceEvent.id,
        BounceEvent.email,
        BounceEvent.delivery_id,
        BounceEvent.source,
        BounceEvent.detail,
        BounceEvent.created_at,
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(*columns).order_by(BounceEvent.id))]


def _insert_kind(engine: Engine, kind: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(BounceEvent.__table__).values(
                email="raw@example.com",
                kind=kind,
                source="smtp",
                detail="inserted by the test",
                created_at=utcnow(),
            )
        )


def test_0007_lets_delay_warnings_in_keeps_the_old_events_and_downgrades(empty_database_url):
    engine = db.make_engine(empty_database_url)
    try:
        # The events are written by today's code, then the schema is taken back to 0006 under them.
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent = sent_issue(sessions, ["ann@example.com", "bob@example.com"])
        ann, bob = sent["ann@example.com"], sent["bob@example.com"]
        with db.transaction(sessions) as s:
            for kind, delivery_id, email in (
                ("hard", ann.delivery_id, None),
                ("soft", bob.delivery_id, None),
                ("complaint", None, "cy@example.com"),
                ("unsubscribe", bob.delivery_id, None),
            ):
                record_bounce(
                    s,
                    email=email,
                    delivery_id=delivery_id,
                    kind=kind,
                    source="smtp",
                    detail=f"an old {kind} event",
                    soft_limit=3,
                    soft_days=30,
                    proof=None if delivery_id else "a signed link",
                )  # 0010's downgrade drops unproven events
        _downgrade(engine, "0006")
        old = _stored(engine)
        assert [row[0] for row in old] == ["hard", "soft", "complaint", "unsubscribe"]
        with pytest.raises(IntegrityError):  # what the old constraint says
            _insert_kind(engine, "delayed")

        db.upgrade(engine)
        assert db.schema_is_current(engine)
        assert _stored(engine) == old  # every old event as it was
        with db.transaction(sessions) as s:
            outcome = record_bounce(
                s,
                email=None,
                delivery_id=ann.delivery_id,
                kind="delayed",
                source="smtp",
                detail="delayed 4.4.1",
                soft_limit=3,
                soft_days=30,
            )
        assert not outcome.repeated
        _insert_kind(engine, "delayed")
        with pytest.raises(IntegrityError):  # the constraint was widened, not dropped
            _insert_kind(engine, "bounced")
        schema = inspect(engine)
        [check] = [c for c in schema.get_check_constraints("bounce_events") if c["name"] == "ck_bounce_events_kind"]
        assert "'delayed'" in check["sqltext"]
        assert [i["name"] for i in schema.get_indexes("bounce_events")] == ["ix_bounce_events_email_kind"]
        [foreign_key] = schema.get_foreign_keys("bounce_events")
        assert foreign_key["referred_table"] == "deliveries" and foreign_key["options"].get("ondelete") == "SET NULL"
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []

        _downgrade(engine, "0006")
        assert db.current_revision(engine) == "0006"
        assert _stored(engine) == old  # the delay warnings are gone, nothing else
        with pytest.raises(IntegrityError):
            _insert_kind(engine, "delayed")
        db.upgrade(engine)  # and up again
        assert db.schema_is_current(engine) and _stored(engine) == old
    finally:
        engine.dispose()


def test_0008_adds_send_audience_and_private_lists_keeping_every_send_and_delivery(empty_database_url):
    from sqlalchemy import func, text

    from newsletter.store.models import Delivery, MailingList, Send

    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent_issue(sessions, ["ann@example.com", "bob@example.com"])

        def counts() -> tuple[int, int, int]:
            with engine.connect() as conn:
                lists, sends, deliveries = (
                    conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in (MailingList, Send, Delivery)
                )
                return lists, sends, deliveries

        before = counts()
        assert before == (1, 1, 2)
        # Down and up again: SQLite copies the tables, and nothing that references them may go with them.
        _downgrade(engine, "0007")
        assert "audience" not in {c["name"] for c in inspect(engine).get_columns("sends")}
        assert counts() == before
        db.upgrade(engine)
        assert counts() == before
        with engine.connect() as conn:
            assert conn.execute(text("SELECT audience FROM sends")).scalars().all() == ["all"]
            assert conn.execute(text("SELECT private FROM mailing_lists")).scalars().all() in ([0], [False])
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # back on after the migration
        with pytest.raises(IntegrityError):
            with engine.begin() as conn:
                conn.execute(text("UPDATE sends SET audience = 'some'"))
    finally:
        engine.dispose()


def test_0009_adds_requests_to_confirm_and_walks_down_and_up_with_data(empty_database_url):
    from sqlalchemy import func, text, update

    from newsletter.store.models import ConfirmationMail, ConfirmationRun, Delivery, Subscription
    from subscribers import confirmation_requests
    from subscribers.subscriptions import add_subscriber

    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent_issue(sessions, ["ann@example.com", "bob@example.com"])
        with db.transaction(sessions) as s:
            for email in ("cy@example.com", "dee@example.com"):
                add_subscriber(s, "weekly", email, confirmed=False, source="import")
            started = confirmation_requests.start_run(s, "weekly", batch_size=10, created_by="test")
            s.execute(
                update(ConfirmationMail)
                .where(ConfirmationMail.email == "cy@example.com")
                .values(status="sent", attempts=1, smtp_code=250, smtp_reply="2.0.0 OK", sent_at=utcnow())
            )
            subscription_id = s.scalar(
                select(ConfirmationMail.subscription_id).where(ConfirmationMail.email == "cy@example.com")
            )
            assert subscription_id is not None
            confirmation_requests.record_asked(s, subscription_id)
        assert started.queued == 2

        def kept() -> list[tuple]:
            """Everything 0008 already had: the subscriptions (without the new column) and the deliveries."""
            with engine.connect() as conn:
                subs = conn.execute(
                    text(
                        "SELECT id, list_id, subscriber_id, status, source, requested_at FROM subscriptions ORDER BY id"
                    )
                ).all()
                return [tuple(r) for r in subs] + [(conn.scalar(select(func.count()).select_from(Delivery)),)]

        before = kept()
        _downgrade(engine, "0008")
        schema = inspect(engine)
        assert (
            "confirmation_runs" not in schema.get_table_names() and "confirmation_mails" not in schema.get_table_names()
        )
        assert "confirmation_requested_at" not in {c["name"] for c in schema.get_columns("subscriptions")}
        assert kept() == before
        with db.transaction(sessions) as s:  # today's models still add a subscription to a 0008 database
            add_subscriber(s, "weekly", "eve@example.com", confirmed=False, source="import")

        db.upgrade(engine)
        assert db.schema_is_current(engine)
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(ConfirmationRun)) == 0
            assert (
                conn.execute(text("SELECT confirmation_requested_at FROM subscriptions")).scalars().all() == [None] * 5
            )
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert diff == []
        with db.transaction(sessions) as s:  # the run's log went with 0009: nobody counts as asked or queued now
            again = confirmation_requests.start_run(s, "weekly", batch_size=10)
            assert again.queued == 3 and (again.asked_recently, again.already_queued) == (0, 0)
            assert s.scalars(select(ConfirmationMail.email).order_by(ConfirmationMail.id)).all() == [
                "cy@example.com",
                "dee@example.com",
                "eve@example.com",
            ]
            assert s.scalar(select(func.count()).select_from(Subscription)) == 5
        with pytest.raises(IntegrityError):  # the new status constraint holds
            with engine.begin() as conn:
                conn.execute(text("UPDATE confirmation_mails SET status = 'lost'"))
    finally:
        engine.dispose()


def test_0012_drops_the_deliveries_foreign_keys_keeping_every_row_and_walks_back(empty_database_url):
    from sqlalchemy import text

    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent_issue(sessions, ["ann@example.com", "bob@example.com"])

        def keys() -> set[str]:
            return {fk["referred_table"] for fk in inspect(engine).get_foreign_keys("deliveries")}

        def rows() -> list[tuple]:
            with engine.connect() as conn:
                query = "SELECT id, send_id, subscriber_id, email, status, smtp_reply, message_id FROM deliveries"
                return [tuple(r) for r in conn.execute(text(query + " ORDER BY id"))]

        before = rows()
        assert len(before) == 2 and keys() == set()
        _downgrade(engine, "0011")
        assert keys() == {"sends", "subscribers"}
        assert rows() == before
        db.upgrade(engine)
        assert keys() == set() and rows() == before
        assert db.schema_is_current(engine)
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # back on after the migration
    finally:
        engine.dispose()


def test_0013_moves_claims_to_their_own_table_and_walks_back(empty_database_url):
    from sqlalchemy import text

    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent_issue(sessions, ["ann@example.com", "bob@example.com"])

        def rows() -> list[tuple]:
            with engine.connect() as conn:
                return [
                    tuple(r) for r in conn.execute(text("SELECT id, status, message_id FROM deliveries ORDER BY id"))
                ]

        before = rows()
        assert "batch_claims" in inspect(engine).get_table_names()
        _downgrade(engine, "0012")
        schema = inspect(engine)
        assert "batch_claims" not in schema.get_table_names()
        assert {"claimed_by", "claim_expires"} <= {c["name"] for c in schema.get_columns("deliveries")}
        assert rows() == before
        db.upgrade(engine)
        assert "claimed_by" not in {c["name"] for c in inspect(engine).get_columns("deliveries")}
        assert rows() == before and db.schema_is_current(engine)
    finally:
        engine.dispose()


def test_0014_adds_tracking_off_for_every_list_and_walks_back_keeping_sends(empty_database_url):
    from sqlalchemy import text

    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent_issue(sessions, ["ann@example.com", "bob@example.com"])

        def kept() -> list[tuple]:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text("SELECT id, status, email FROM deliveries ORDER BY id"))]

        before = kept()
        _downgrade(engine, "0013")  # the lists and sends of a 0013 database, then the upgrade under test
        assert kept() == before
        db.upgrade(engine)
        schema = inspect(engine)
        assert {"send_links", "engagement_events", "engagement_counts"} <= set(schema.get_table_names())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT tracking FROM mailing_lists")).scalars().all() == ["off"]
            assert conn.execute(text("SELECT tracking, reader_key FROM sends")).all() == [("off", None)]
        assert kept() == before and db.schema_is_current(engine)
        with pytest.raises(IntegrityError):  # the choice is one of three
            with engine.begin() as conn:
                conn.execute(text("UPDATE mailing_lists SET tracking = 'sneaky'"))
        _downgrade(engine, "0013")
        assert "engagement_events" not in inspect(engine).get_table_names()
        assert "tracking" not in {c["name"] for c in inspect(engine).get_columns("sends")}
        assert kept() == before
    finally:
        engine.dispose()


def test_0015_adds_send_lists_delivery_lists_and_segments_and_walks_back(empty_database_url):
    from sqlalchemy import text

    from newsletter.content.issue_files import read_issue_file
    from newsletter.content.issues import create_issue
    from newsletter.delivery import sending
    from subscribers.lists import create_list
    from subscribers.segments import create_segment
    from subscribers.subscriptions import add_subscriber
    from tests.bouncekit import RENDER
    from tests.sendkit import SAMPLE_ISSUE

    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent_issue(sessions, ["ann@example.com", "bob@example.com"])  # a send to one list: no list ids
        with db.transaction(sessions) as s:
            create_list(s, "monthly", name="The Monthly", from_email="news@example.org")
            add_subscriber(s, "monthly", "bob@example.com", confirmed=True)
            add_subscriber(s, "monthly", "cid@example.com", confirmed=True)
            create_segment(s, "monthly", "cids", 'name = "" and email contains "cid"')
            issue, _ = create_issue(s, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
            sending.start_send(s, issue.id, RENDER, list_slugs=["weekly", "monthly"], batch_size=1000)
            issue, _ = create_issue(s, "monthly", read_issue_file(SAMPLE_ISSUE), RENDER)
            sending.start_send(s, issue.id, RENDER, segment="cids", batch_size=1000)

        def rows() -> list[tuple]:
            with engine.connect() as conn:
                query = "SELECT id, send_id, subscriber_id, email, status FROM deliveries ORDER BY id"
                return [tuple(r) for r in conn.execute(text(query))]

        with engine.connect() as conn:
            lists = conn.execute(text("SELECT send_id, list_id FROM deliveries ORDER BY id")).all()
            segment = conn.execute(text("SELECT segment_name, segment_filter FROM sends ORDER BY id")).all()
        assert [list_id is None for _, list_id in lists] == [True, True, False, False, False, True]
        assert [tuple(r) for r in segment] == [
            (None, None),
            (None, None),
            ("cids", 'name = "" and email contains "cid"'),
        ]
        before = rows()
        _downgrade(engine, "0014")
        schema = inspect(engine)
        assert not {"send_lists", "segments"} & set(schema.get_table_names())
        assert "list_id" not in {c["name"] for c in schema.get_columns("deliveries")}
        assert "segment_filter" not in {c["name"] for c in schema.get_columns("sends")}
        assert rows() == before
        db.upgrade(engine)
        assert rows() == before and db.schema_is_current(engine)
        assert {"send_lists", "segments"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_0019_adds_subject_tests_and_variants_and_walks_back(empty_database_url):
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from newsletter.content.issue_files import read_issue_file
    from newsletter.content.issues import create_issue
    from newsletter.delivery import sending
    from newsletter.delivery.subject_variants import SubjectTestPlan
    from subscribers.lists import update_list
    from tests.bouncekit import RENDER
    from tests.sendkit import SAMPLE_ISSUE

    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    before_0019 = ScriptDirectory.from_config(config).get_revision("0019").down_revision
    assert isinstance(before_0019, str)
    engine = db.make_engine(empty_database_url)
    try:
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        sent_issue(sessions, ["ann@example.com", "bob@example.com"])  # a send without a test: no variants
        with db.transaction(sessions) as s:
            update_list(s, "weekly", tracking="anonymous")
            issue, _ = create_issue(s, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
            sending.start_send(s, issue.id, RENDER, batch_size=1000, subject_test=SubjectTestPlan("Other", 100, 60))

        def rows() -> list[tuple]:
            with engine.connect() as conn:
                query = "SELECT id, send_id, subscriber_id, email, status FROM deliveries ORDER BY id"
                return [tuple(r) for r in conn.execute(text(query))]

        with engine.connect() as conn:
            variants = [r[0] for r in conn.execute(text("SELECT variant FROM deliveries ORDER BY id"))]
            tests = conn.execute(text("SELECT send_id, state, recipients_a, recipients_b FROM subject_tests")).all()
        assert variants[:2] == [None, None] and sorted(variants[2:]) == [1, 2]
        assert [tuple(t) for t in tests] == [(2, "testing", 1, 1)]
        before = rows()
        _downgrade(engine, before_0019)
        schema = inspect(engine)
        assert "subject_tests" not in schema.get_table_names()
        assert "variant" not in {c["name"] for c in schema.get_columns("deliveries")}
        assert "variant" not in {c["name"] for c in schema.get_columns("engagement_events")}
        assert rows() == before
        db.upgrade(engine)
        assert rows() == before and db.schema_is_current(engine)
        assert "subject_tests" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
