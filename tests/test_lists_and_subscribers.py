"""Lists, single subscriptions, suppressions and export, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.store.db import transaction
from subscribers import exporting, importing, lists, subscriptions, suppressions


def test_create_list_validates_and_rejects_duplicates(sessions):
    with transaction(sessions) as session:
        created = lists.create_list(
            session, "weekly", name="Weekly", from_email="News@Example.org", reply_to="ed@example.org"
        )
        assert (created.from_email, created.reply_to) == ("news@example.org", "ed@example.org")
    with pytest.raises(Conflict, match="already exists"), transaction(sessions) as session:
        lists.create_list(session, "weekly", name="Again", from_email="news@example.org")
    for slug, kwargs, where in [
        ("Bad Slug", {}, "SLUG"),
        ("ok", {"from_email": "nope"}, "--from-email"),
        ("ok", {"name": ""}, "--name"),
        ("ok", {"from_name": "Evil\r\nBcc: x@example.com"}, "--from-name"),
    ]:
        args: dict[str, Any] = {"name": "N", "from_email": "a@example.org", **kwargs}
        with pytest.raises(InvalidInput) as caught, transaction(sessions) as session:
            lists.create_list(session, slug, **args)
        assert caught.value.where == where
    with pytest.raises(NotFound, match="lists: weekly"), transaction(sessions) as session:
        lists.get_list(session, "monthly")


def test_add_remove_and_counts(sessions):
    with transaction(sessions) as session:
        lists.create_list(session, "weekly", name="Weekly", from_email="news@example.org")
        assert subscriptions.add_subscriber(session, "weekly", "Ann@Example.com", name="Ann", confirmed=True).created
        assert not subscriptions.add_subscriber(session, "weekly", "ann@example.com").created
        subscriptions.add_subscriber(session, "weekly", "bob@example.com")
        subscriptions.add_subscriber(session, "weekly", "cat@example.com", confirmed=True)
        subscriptions.unsubscribe(session, "weekly", "cat@example.com", reason="asked by mail")
    with transaction(sessions) as session:
        counted = lists.list_with_counts(session, "weekly")
        assert counted.counts == {"unconfirmed": 1, "confirmed": 1, "unsubscribed": 1}
        rows = list(subscriptions.iter_subscribers(session, "weekly"))
        assert [(r.email, r.status) for r in rows] == [
            ("ann@example.com", "confirmed"),
            ("bob@example.com", "unconfirmed"),
            ("cat@example.com", "unsubscribed"),
        ]
        cat = rows[2]
        assert cat.ended_at is not None
        assert [r.email for r in subscriptions.iter_subscribers(session, "weekly", status="confirmed")] == [
            "ann@example.com"
        ]
    with pytest.raises(NotFound), transaction(sessions) as session:
        subscriptions.unsubscribe(session, "weekly", "nobody@example.com", reason="x")
    with pytest.raises(InvalidInput, match="unknown status"), transaction(sessions) as session:
        list(subscriptions.iter_subscribers(session, "weekly", status="gone"))


def test_explicit_resubscribe_writes_a_new_consent_record(sessions):
    with transaction(sessions) as session:
        lists.create_list(session, "weekly", name="Weekly", from_email="news@example.org")
        subscriptions.add_subscriber(session, "weekly", "ann@example.com", confirmed=True)
        subscriptions.unsubscribe(session, "weekly", "ann@example.com", reason="test")
        again = subscriptions.add_subscriber(session, "weekly", "ann@example.com", source="form", ip="203.0.113.9")
        sub = again.subscription
        assert (sub.status, sub.source, sub.ip, sub.ended_at, sub.confirmed_at) == (
            "unconfirmed",
            "form",
            "203.0.113.9",
            None,
            None,
        )


def test_suppressions(sessions):
    with transaction(sessions) as session:
        row, created = suppressions.suppress(session, "Bounce@Example.com", reason="hard_bounce", note="550 5.1.1")
        assert created and row.email == "bounce@example.com"
        assert suppressions.suppress(session, "bounce@example.com")[1] is False
        assert suppressions.is_suppressed(session, "BOUNCE@example.com")
        assert [s.email for s in suppressions.all_suppressions(session)] == ["bounce@example.com"]
    with pytest.raises(InvalidInput, match="unknown reason"), transaction(sessions) as session:
        suppressions.suppress(session, "x@example.com", reason="because")
    with transaction(sessions) as session:
        suppressions.unsuppress(session, "bounce@example.com")
        assert not suppressions.is_suppressed(session, "bounce@example.com")
    with pytest.raises(NotFound), transaction(sessions) as session:
        suppressions.unsuppress(session, "bounce@example.com")


def test_export_then_import_round_trips(sessions, tmp_path):
    with transaction(sessions) as session:
        lists.create_list(session, "weekly", name="Weekly", from_email="news@example.org")
        lists.create_list(session, "copy", name="Copy", from_email="news@example.org")
    source = tmp_path / "in.csv"
    source.write_text('email,name,city\nann@example.com,"Lee, Ann",Zürich\nbob@example.com,Bob,\n', encoding="utf-8")
    with transaction(sessions) as session:
        importing.import_csv(session, "weekly", source, confirmed=True)
    out = io.StringIO()
    with transaction(sessions) as session:
        assert exporting.export_csv(session, "weekly", out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0])[:3] == ["email", "name", "status"]
    assert [(r["email"], r["name"], r["status"], r["city"]) for r in rows] == [
        ("ann@example.com", "Lee, Ann", "confirmed", "Zürich"),
        ("bob@example.com", "Bob", "confirmed", ""),
    ]
    exported = tmp_path / "out.csv"
    exported.write_text(out.getvalue(), encoding="utf-8")
    with transaction(sessions) as session:
        summary = importing.import_csv(session, "copy", exported, confirmed=True)
        assert (summary.imported, summary.rejected) == (2, 0)
        again = io.StringIO()
        exporting.export_csv(session, "copy", again)
    assert next(csv.DictReader(io.StringIO(again.getvalue())))["city"] == "Zürich"
