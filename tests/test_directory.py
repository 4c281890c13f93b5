"""The subscriber directory (search, view, edit, delete, erase), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from newsletter.delivery import sending
from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.store.db import transaction
from newsletter.store.models import BounceEvent, Delivery, Issue, Send, Subscriber, Subscription
from subscribers import directory, lists, subscriptions, suppressions
from tests.bouncekit import RENDER


def make_lists(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        lists.create_list(session, "weekly", name="The Weekly", from_email="news@example.org")
        lists.create_list(session, "daily", name="The Daily", from_email="news@example.org")


def add(sessions: sessionmaker[Session], slug: str, email: str, name: str = "", *, confirmed: bool = True) -> int:
    with transaction(sessions) as session:
        result = subscriptions.add_subscriber(session, slug, email, name=name, confirmed=confirmed)
        return result.subscription.subscriber_id


@pytest.fixture
def people(sessions):
    make_lists(sessions)
    ids = {
        "ann": add(sessions, "weekly", "ann@example.com", "Ann Lee"),
        "bob": add(sessions, "weekly", "bob@example.org", "Bob Stone", confirmed=False),
        "cat": add(sessions, "daily", "cat@example.net", "Catherine Ann Moss"),
        "dan": add(sessions, "daily", "dan_100%@example.com", "Dan"),
    }
    add(sessions, "daily", "ann@example.com")
    return ids


def search(sessions: sessionmaker[Session], **kwargs) -> directory.Page:
    with sessions() as session:
        return directory.search_subscribers(session, **kwargs)


def emails(page: directory.Page) -> list[str]:
    return [item.email for item in page.items]


def test_search_by_substring_of_email_or_name_any_case(sessions, people):
    assert emails(search(sessions, query="ANN")) == ["ann@example.com", "cat@example.net"]  # email, then name
    assert emails(search(sessions, query="stone")) == ["bob@example.org"]
    assert emails(search(sessions, query="example.org")) == ["bob@example.org"]
    # % and _ are literal characters, not wildcards.
    assert emails(search(sessions, query="_100%")) == ["dan_100%@example.com"]
    assert emails(search(sessions, query="n_l")) == []
    assert emails(search(sessions, query="%")) == ["dan_100%@example.com"]
    assert search(sessions, query="nobody").total == 0
    assert emails(search(sessions, query="  ")) == [  # blank: everyone, by id
        "ann@example.com",
        "bob@example.org",
        "cat@example.net",
        "dan_100%@example.com",
    ]


def test_filters_by_list_and_status(sessions, people):
    assert emails(search(sessions, list_slug="weekly")) == ["ann@example.com", "bob@example.org"]
    assert emails(search(sessions, list_slug="weekly", status="unconfirmed")) == ["bob@example.org"]
    assert emails(search(sessions, status="confirmed")) == [
        "ann@example.com",
        "cat@example.net",
        "dan_100%@example.com",
    ]
    assert emails(search(sessions, list_slug="daily", query="ann")) == ["ann@example.com", "cat@example.net"]
    with pytest.raises(InvalidInput) as bad:
        search(sessions, status="gone")
    assert bad.value.where == "status"
    with pytest.raises(NotFound):
        search(sessions, list_slug="monthly")


def test_items_carry_subscriptions_and_suppression(sessions, people):
    with transaction(sessions) as session:
        suppressions.suppress(session, "cat@example.net", reason="complaint")
    page = search(sessions, query="example")
    ann = page.items[0]
    assert [(s.list_slug, s.list_name, s.status, s.source) for s in ann.subscriptions] == [
        ("daily", "The Daily", "confirmed", "admin"),
        ("weekly", "The Weekly", "confirmed", "admin"),
    ]
    assert ann.suppressed is None
    assert [i.suppressed for i in page.items if i.email == "cat@example.net"] == ["complaint"]
    data = json.loads(json.dumps(ann.as_json()))
    assert data["email"] == "ann@example.com" and data["subscriptions"][0]["list"] == "daily"
    assert data["created_at"].startswith(str(ann.created_at.year)) and "T" in data["created_at"]


def test_paging_totals_and_limits(sessions):
    make_lists(sessions)
    for i in range(23):
        add(sessions, "weekly", f"p{i:02d}@example.com")
    first = search(sessions, limit=10)
    third = search(sessions, limit=10, offset=20)
    assert (first.total, len(first.items), third.total, len(third.items)) == (23, 10, 23, 3)
    assert emails(first)[0] == "p00@example.com" and emails(third) == [
        "p20@example.com",
        "p21@example.com",
        "p22@example.com",
    ]
    assert search(sessions, offset=100).items == () and search(sessions, offset=100).total == 23
    for bad in (0, 501, -1):
        with pytest.raises(InvalidInput) as error:
            search(sessions, limit=bad)
        assert error.value.where == "limit"
    with pytest.raises(InvalidInput) as error:
        search(sessions, offset=-1)
    assert error.value.where == "offset"


def test_search_is_three_queries_whatever_the_page_size(sessions):
    make_lists(sessions)
    with transaction(sessions) as session:
        for i in range(60):
            subscriptions.add_subscriber(session, "weekly", f"q{i}@example.com", confirmed=True)
            subscriptions.add_subscriber(session, "daily", f"q{i}@example.com")
    statements: list[str] = []
    engine = sessions.kw["bind"]

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        page = search(sessions, list_slug="weekly", status="confirmed", limit=50)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert page.total == 60 and len(page.items) == 50
    assert all(len(item.subscriptions) == 2 for item in page.items)
    assert len(statements) == 4  # the list's id, the count, the page, the page's subscriptions


def test_get_subscriber_and_not_found(sessions, people):
    with sessions() as session:
        found = directory.get_subscriber(session, people["bob"])
        assert (found.email, found.name, [s.status for s in found.subscriptions]) == (
            "bob@example.org",
            "Bob Stone",
            ["unconfirmed"],
        )
        with pytest.raises(NotFound):
            directory.get_subscriber(session, 999_999)


def test_update_fields_and_refusals(sessions, people):
    with transaction(sessions) as session:
        updated = directory.update_subscriber(
            session,
            people["ann"],
            email=" Ann.Lee@EXAMPLE.com ",
            name=" Ann B. Lee ",
            attributes={"city": "Zürich", "age": 41, "score": 2.5, "vip": True},
        )
    assert (updated.email, updated.name) == ("ann.lee@example.com", "Ann B. Lee")
    assert updated.attributes == {"city": "Zürich", "age": 41, "score": 2.5, "vip": True}
    with sessions() as session:
        assert directory.get_subscriber(session, people["ann"]).attributes["vip"] is True

    def refused(error_type, **fields):
        with pytest.raises(error_type) as caught, transaction(sessions) as session:
            directory.update_subscriber(session, people["ann"], **fields)
        return caught.value

    assert "cat@example.net" in str(refused(Conflict, email="CAT@example.net"))
    assert refused(InvalidInput, email="not an address").where == "email"
    assert refused(InvalidInput, name="Ann\r\nBcc: x@example.com").where == "name"
    assert refused(InvalidInput, attributes={"nested": {"a": 1}}).where == "attributes"
    assert refused(InvalidInput, attributes={"list": [1, 2]}).where == "attributes"
    assert refused(InvalidInput, attributes={"": "x"}).where == "attributes"
    assert refused(InvalidInput, attributes={"n": float("nan")}).where == "attributes"
    assert refused(InvalidInput, attributes=["a"]).where == "attributes"
    # A refused field changes nothing, not even the fields given with it.
    refused(InvalidInput, name="Changed", attributes={"bad": None})
    with sessions() as session:
        ann = directory.get_subscriber(session, people["ann"])
    assert (ann.email, ann.name, ann.attributes["city"]) == ("ann.lee@example.com", "Ann B. Lee", "Zürich")
    with pytest.raises(NotFound), transaction(sessions) as session:
        directory.update_subscriber(session, 999_999, name="x")


def test_set_subscription_adds_removes_and_respects_suppression(sessions, people):
    with transaction(sessions) as session:
        bob = directory.set_subscription(session, people["bob"], "daily", "confirmed")
    daily = next(s for s in bob.subscriptions if s.list_slug == "daily")
    assert (daily.status, daily.source, daily.confirmed_at is not None) == ("confirmed", "admin", True)

    with transaction(sessions) as session:
        bob = directory.set_subscription(session, people["bob"], "daily", "unsubscribed")
    daily = next(s for s in bob.subscriptions if s.list_slug == "daily")
    assert (daily.status, daily.end_reason, daily.ended_at is not None) == ("unsubscribed", "removed by an admin", True)

    with transaction(sessions) as session:  # re-added by an admin: a new consent
        bob = directory.set_subscription(session, people["bob"], "daily", "confirmed", source="api")
    daily = next(s for s in bob.subscriptions if s.list_slug == "daily")
    assert (daily.status, daily.source, daily.ended_at, daily.end_reason) == ("confirmed", "api", None, None)

    with transaction(sessions) as session:
        suppressions.suppress(session, "cat@example.net", reason="hard_bounce")
    with pytest.raises(Conflict) as conflict, transaction(sessions) as session:
        directory.set_subscription(session, people["cat"], "weekly", "confirmed")
    assert "suppressed" in str(conflict.value)
    with transaction(sessions) as session:  # removing a suppressed address is fine
        cat = directory.set_subscription(session, people["cat"], "daily", "unsubscribed")
    assert [s.list_slug for s in cat.subscriptions] == ["daily"] and cat.suppressed == "hard_bounce"

    with pytest.raises(InvalidInput) as bad, transaction(sessions) as session:
        directory.set_subscription(session, people["bob"], "daily", "unconfirmed")
    assert bad.value.where == "status"
    with pytest.raises(NotFound), transaction(sessions) as session:
        directory.set_subscription(session, people["dan"], "weekly", "unsubscribed")  # not on that list
    with pytest.raises(NotFound), transaction(sessions) as session:
        directory.set_subscription(session, people["dan"], "monthly", "confirmed")


def make_delivery(sessions: sessionmaker[Session], subscriber_id: int, email: str, status: str = "sent") -> int:
    with transaction(sessions) as session:
        list_id = lists.get_list(session, "weekly").id
        issue = Issue(list_id=list_id, subject="Hello", body_markdown="Hi")
        session.add(issue)
        session.flush()
        send = Send(
            issue_id=issue.id, list_id=list_id, status="finished", subject="Hello", html="<p>Hi</p>", text="Hi", total=2
        )
        session.add(send)
        session.flush()
        session.add(
            Delivery(
                send_id=send.id,
                subscriber_id=subscriber_id,
                email=email,
                status=status,
                smtp_code=550,
                smtp_reply=f"550 5.1.1 <{email}>: no such user",
            )
        )
        return send.id


def test_delete_keeps_consent_history(sessions, people):
    with transaction(sessions) as session:
        subscriptions.unsubscribe(session, "daily", "ann@example.com", reason="one-click unsubscribe")
    with transaction(sessions) as session:
        directory.delete_subscriber(session, people["ann"])
    with sessions() as session:
        ann = directory.get_subscriber(session, people["ann"])
    by_list = {s.list_slug: s for s in ann.subscriptions}
    assert by_list["weekly"].status == "unsubscribed" and by_list["weekly"].end_reason == "deleted by an admin"
    assert by_list["weekly"].confirmed_at is not None  # proof of consent kept
    assert by_list["daily"].end_reason == "one-click unsubscribe"  # an earlier unsubscribe keeps its record
    assert emails(search(sessions, status="confirmed")) == ["cat@example.net", "dan_100%@example.com"]


def test_erase_removes_everything_and_anonymises_the_delivery_log(sessions, people):
    send_id = make_delivery(sessions, people["ann"], "ann@example.com", status="bounced")
    fan = add(sessions, "weekly", "erased-fan@example.com")  # a real address that looks like a tombstone's
    with transaction(sessions) as session:
        session.add(BounceEvent(email="ann@example.com", kind="hard", source="smtp", detail="550 no such user"))
        session.add(BounceEvent(email="bob@example.org", kind="soft", source="smtp", detail="452 full"))
    with transaction(sessions) as session:
        directory.delete_subscriber(session, people["ann"], erase=True)
        directory.delete_subscriber(session, people["dan"], erase=True)  # never mailed

    with sessions() as session:
        with pytest.raises(NotFound):
            directory.get_subscriber(session, people["ann"])
        with pytest.raises(NotFound):
            directory.update_subscriber(session, people["ann"], name="x")
        assert session.get(Subscriber, people["dan"]) is None
        rows = [(s.email, s.name, s.attributes) for s in session.scalars(select(Subscriber))]
        assert not any("ann" in repr(row) or "Lee" in repr(row) for row in rows)
        assert (
            session.scalar(
                select(func.count())
                .select_from(Subscription)
                .where(Subscription.subscriber_id.in_([people["ann"], people["dan"]]))
            )
            == 0
        )
        assert session.scalars(select(BounceEvent.email)).all() == ["bob@example.org"]
        delivery = session.scalars(select(Delivery).where(Delivery.send_id == send_id)).one()
        assert (delivery.email, delivery.status, delivery.smtp_code, delivery.smtp_reply) == (
            "erased",
            "bounced",
            550,
            None,
        )
    everyone = search(sessions)
    assert (everyone.total, emails(everyone)) == (3, ["bob@example.org", "cat@example.net", "erased-fan@example.com"])
    assert emails(search(sessions, query="erased")) == ["erased-fan@example.com"]
    assert search(sessions, list_slug="weekly").total == 2 and search(sessions, status="confirmed").total == 2
    with sessions() as session:
        assert directory.get_subscriber(session, fan).email == "erased-fan@example.com"
    with pytest.raises(NotFound), transaction(sessions) as session:
        directory.delete_subscriber(session, people["ann"], erase=True)


def test_erase_skips_a_pending_delivery(sessions, people):
    make_delivery(sessions, people["bob"], "bob@example.org", status="pending")
    with transaction(sessions) as session:
        directory.delete_subscriber(session, people["bob"], erase=True)
    with sessions() as session:
        assert session.execute(select(Delivery.email, Delivery.status)).all() == [("erased", "skipped")]


def test_an_erasure_while_a_send_is_snapshotting_waits_and_leaves_no_trace(sessions, people):
    """deliveries has no foreign keys (migration 0012): an erasure racing a snapshot must still see its rows.

    The snapshot's transaction is held open after writing the deliveries; the erasure, started then,
    must wait for it, so it finds the pending row, skips and anonymises it and keeps a tombstone.
    Without the lock the erasure found no delivery, deleted the subscriber and left a pending row
    with the erased person's address, for a subscriber that no longer exists.
    """
    with transaction(sessions) as session:
        issue = Issue(list_id=lists.get_list(session, "daily").id, subject="Hello", body_markdown="Hi")
        session.add(issue)
        session.flush()
        issue_id = issue.id
    snapshot = sessions()
    snapshot.begin()
    send, _ = sending.start_send(snapshot, issue_id, RENDER, batch_size=100)
    assert snapshot.scalars(select(Delivery.email).where(Delivery.send_id == send.id).order_by(Delivery.id)).all() == [
        "ann@example.com",
        "cat@example.net",
        "dan_100%@example.com",
    ]
    erased: list[BaseException | None] = []

    def erase() -> None:
        try:
            with transaction(sessions) as session:
                directory.delete_subscriber(session, people["dan"], erase=True)
            erased.append(None)
        except BaseException as error:  # reported by the assertion below
            erased.append(error)

    eraser = threading.Thread(target=erase)
    eraser.start()
    if snapshot.get_bind().dialect.name == "postgresql":  # wait until it is either done or waiting for the lock
        with sessions() as watcher:
            for _ in range(500):
                waiting = watcher.scalar(
                    text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                )
                if erased or waiting:
                    break
                time.sleep(0.01)
    else:  # SQLite: the erasure's BEGIN IMMEDIATE waits for the snapshot's write lock
        time.sleep(0.3)
    snapshot.commit()
    snapshot.close()
    eraser.join(60)
    assert erased == [None]
    with sessions() as session:
        rows = session.execute(
            select(Delivery.email, Delivery.status, Subscriber.id)
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.subscriber_id == people["dan"])
        ).all()
        assert rows == [("erased", "skipped", people["dan"])]  # the subscriber a tombstone, the row anonymised
        assert session.scalar(select(Subscriber.email).where(Subscriber.id == people["dan"])).startswith("erased-")
        orphans = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.id.is_(None))
        )
        assert orphans == 0
