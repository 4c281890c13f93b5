"""Segments on a real database (SQLite and PostgreSQL): each filter picks exactly its people; the commands."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from newsletter.errors import Conflict, NotFound
from newsletter.store.models import EngagementEvent, MailingList, Send, Subscriber, Subscription
from newsletter.store.states import EngagementKind, EngagementOrigin, SendStatus, Tracking
from subscribers import segments
from subscribers.lists import create_list, get_list
from subscribers.segments import SegmentError
from subscribers.subscriptions import add_subscriber
from subscribers.suppressions import suppress

PEOPLE = [
    # email, name, attributes, source, confirmed on
    ("ann@gmail.com", "Ann", {"plan": "pro", "city": "Paris"}, "import", datetime(2026, 2, 1, tzinfo=UTC)),
    ("bob@gmail.com", "Bob Test", {"plan": "team"}, "import", datetime(2026, 1, 1, 12, tzinfo=UTC)),
    ("cid@Example.org", "Cid", {"plan": "free", "seats": 5}, "form", datetime(2025, 12, 31, tzinfo=UTC)),
    ("dee@mail.example.org", "Dee 100%_", {}, "api", datetime(2026, 3, 1, tzinfo=UTC)),
]


@pytest.fixture
def news(sessions):
    with sessions.begin() as session:
        create_list(session, "news", name="News", from_email="news@example.org", tracking=Tracking.INDIVIDUAL)
        create_list(session, "quiet", name="Quiet", from_email="news@example.org")
        for email, name, attributes, source, confirmed in PEOPLE:
            add_subscriber(session, "news", email, name=name, confirmed=True, source=source)
            add_subscriber(session, "quiet", email, name=name, confirmed=True, source=source)
            subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email.lower()))
            assert subscriber is not None
            subscriber.attributes = attributes
            for subscription in session.scalars(
                select(Subscription).where(Subscription.subscriber_id == subscriber.id)
            ):
                subscription.confirmed_at = confirmed
        add_subscriber(session, "news", "eve@gmail.com", name="Eve", confirmed=False)  # unconfirmed: never counted
        add_subscriber(session, "news", "fay@gmail.com", name="Fay", confirmed=True)
        suppress(session, "fay@gmail.com", reason="admin")  # suppressed: never counted
    return sessions


def _who(sessions, source: str, slug: str = "news") -> int:
    with sessions() as session:
        return segments.count_matching(session, get_list(session, slug), source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('domain = "gmail.com"', 2),
        ('domain = "@GMAIL.com"', 2),
        ('domain = "example.org"', 1),  # not mail.example.org
        ('domain contains "example"', 2),
        ('domain != "gmail.com"', 2),
        ('domain in ("gmail.com", "example.org")', 3),
        ('email = "CID@example.org"', 1),
        ('email contains "@mail."', 1),
        ('name = "ann"', 1),
        ('name contains "TEST"', 1),
        ('name contains "%_"', 1),  # wildcards are plain characters
        ('not name contains "test"', 3),
        ('name != "Ann"', 3),
        ('attribute.plan = "pro"', 1),
        ('attribute.plan in ("pro", "team")', 2),
        ('attribute.plan != "pro"', 3),  # a missing attribute is "" and so not "pro"
        ('attribute.city contains "par"', 1),
        ('attribute.seats = "5"', 1),  # numbers compare as their text
        ('attribute.nothing = ""', 4),
        ('source = "import"', 2),
        ('source in ("form", "api")', 2),
        ("subscribed after 2026-01-01", 2),  # from 2 January on
        ("subscribed before 2026-01-01", 1),
        ("not subscribed before 2026-01-01 and not subscribed after 2026-01-01", 1),
        ('domain = "gmail.com" and attribute.plan = "team" or name = "Cid"', 2),
        ('domain = "gmail.com" and (attribute.plan = "team" or name = "Cid")', 1),
    ],
)
def test_each_filter_matches_exactly_its_subscribers(news, source, expected):
    assert _who(news, source) == expected


def test_engaged_opened_clicked_count_people_in_the_lists_last_tracked_sends(news):
    with news.begin() as session:
        news_list = get_list(session, "news")
        ids = {s.email: s.id for s in session.scalars(select(Subscriber))}
        sends = []
        for _ in range(3):
            send = Send(
                issue_id=None,
                list_id=news_list.id,
                status=SendStatus.FINISHED,
                subject="s",
                html="",
                text="",
                tracking=Tracking.INDIVIDUAL,
                started_at=datetime.now(UTC),
            )
            sends.append(send)
        # The sends need an issue: one is enough for all three.
        from newsletter.store.models import Issue

        issue = Issue(list_id=news_list.id, subject="s", body_markdown="x")
        session.add(issue)
        session.flush()
        for send in sends:
            send.issue_id = issue.id
            session.add(send)
        session.flush()
        now = datetime.now(UTC)

        def event(send: Send, email: str, kind: EngagementKind, origin=EngagementOrigin.HUMAN) -> EngagementEvent:
            return EngagementEvent(
                send_id=send.id, kind=kind, origin=origin, reader="r", subscriber_id=ids[email], at=now
            )

        session.add_all(
            [
                event(sends[0], "ann@gmail.com", EngagementKind.CLICK),  # the oldest send
                event(sends[2], "bob@gmail.com", EngagementKind.OPEN),  # the newest
                event(sends[2], "cid@example.org", EngagementKind.OPEN, EngagementOrigin.MACHINE),  # a proxy
            ]
        )
    assert _who(news, "engaged in last 1 send") == 1
    assert _who(news, "engaged in last 3 sends") == 2
    assert _who(news, "clicked in last 3 sends") == 1
    assert _who(news, "opened in last 3 sends") == 1
    assert _who(news, "not engaged in last 3 sends") == 2
    with pytest.raises(SegmentError, match="tracking to be individual") as caught:
        _who(news, 'name = "x" or engaged in last 1 send', "quiet")
    assert caught.value.position == 14


def test_saved_segments_are_created_listed_shown_replaced_and_deleted(news):
    with news.begin() as session:
        segments.create_segment(session, "news", "gmail", 'domain = "gmail.com"')
        segments.create_segment(session, "quiet", "gmail", 'domain = "gmail.com"')  # another list, same name
    with news.begin() as session:
        with pytest.raises(Conflict, match="already has a segment named 'gmail'"):
            segments.create_segment(session, "news", "gmail", 'name = "x"')
        with pytest.raises(SegmentError):
            segments.create_segment(session, "news", "bad", 'name = "x')
    with news() as session:
        assert [(v.list_slug, v.name) for v in segments.all_segments(session)] == [
            ("news", "gmail"),
            ("quiet", "gmail"),
        ]
        view = segments.show_segment(session, "news", "gmail")
        assert (view.filter, view.count) == ('domain = "gmail.com"', 2)
    with news.begin() as session:
        segments.create_segment(session, "news", "gmail", 'name = "Ann"', replace=True)
    with news.begin() as session:
        assert segments.show_segment(session, "news", "gmail").count == 1
        segments.delete_segment(session, "news", "gmail")
    with news() as session:
        with pytest.raises(NotFound, match="news has no segment named 'gmail'"):
            segments.show_segment(session, "news", "gmail")
        assert [v.list_slug for v in segments.all_segments(session)] == ["quiet"]
        assert session.scalar(select(MailingList.slug).where(MailingList.slug == "news")) == "news"
