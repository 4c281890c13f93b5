"""What the admin pages read for engagement, on SQLite and PostgreSQL: the weekly growth query, and the
dashboard's reports kept for a minute and computed within a time budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from newsletter.engagement.growth import weekly_growth
from newsletter.http.admin import dashboard
from newsletter.store import db
from newsletter.store.models import Delivery, Issue, MailingList, Send, Subscriber, Subscription, Suppression


def test_growth_counts_each_week_from_the_consent_records_and_suppressions(sessions):
    """The growth query on both databases: subscriptions confirmed, ended and bounced, by week (Monday, UTC)."""
    now = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)  # a Sunday: its week began on Monday 30 November
    with db.transaction(sessions) as session:
        weekly = MailingList(slug="weekly", name="Weekly", from_email="news@example.org")
        other = MailingList(slug="other", name="Other", from_email="news@example.org")
        session.add_all([weekly, other])
        session.flush()

        def subscriber(email: str, mailing_list: MailingList, **fields: object) -> None:
            person = Subscriber(email=email)
            session.add(person)
            session.flush()
            session.add(Subscription(list_id=mailing_list.id, subscriber_id=person.id, source="admin", **fields))

        subscriber("a@example.com", weekly, status="confirmed", confirmed_at=datetime(2026, 11, 30, 0, 0, tzinfo=UTC))
        subscriber("b@example.com", weekly, status="confirmed", confirmed_at=datetime(2026, 11, 29, 23, 59, tzinfo=UTC))
        subscriber(
            "c@example.com",
            weekly,
            status="unsubscribed",
            confirmed_at=datetime(2026, 11, 2, 12, 0, tzinfo=UTC),
            ended_at=datetime(2026, 12, 6, 23, 0, tzinfo=UTC),
            end_reason="one-click (RFC 8058)",
        )
        subscriber("d@example.com", other, status="confirmed", confirmed_at=datetime(2026, 1, 5, tzinfo=UTC))
        session.add_all(
            [
                Suppression(email="a@example.com", reason="hard_bounce", created_at=datetime(2026, 12, 1, tzinfo=UTC)),
                Suppression(email="d@example.com", reason="soft_bounce", created_at=datetime(2026, 12, 2, tzinfo=UTC)),
                Suppression(email="stranger@example.com", reason="hard_bounce", created_at=now),  # on no list
                Suppression(email="b@example.com", reason="admin", created_at=now),  # not a bounce
            ]
        )
        session.flush()
        weeks = weekly_growth(session, now=now, weeks=6)
        only_weekly = weekly_growth(session, now=now, weeks=6, list_id=weekly.id)
    assert [w.start.isoformat() for w in weeks] == [
        "2026-10-26",
        "2026-11-02",
        "2026-11-09",
        "2026-11-16",
        "2026-11-23",
        "2026-11-30",
    ]
    assert [(w.confirmed, w.unsubscribed, w.bounced) for w in weeks] == [
        (0, 0, 0),
        (1, 0, 0),  # c confirmed; d's January confirmation is before the window
        (0, 0, 0),
        (0, 0, 0),
        (1, 0, 0),  # b, a minute before Monday
        (1, 1, 2),  # a; c left; a and d bounced
    ]
    assert (only_weekly[-1].confirmed, only_weekly[-1].unsubscribed, only_weekly[-1].bounced) == (1, 1, 1)


def test_the_dashboard_keeps_reports_a_minute_and_reads_new_ones_only_within_its_budget(sessions):
    now = datetime.now(UTC)
    with db.transaction(sessions) as session:
        weekly = MailingList(slug="weekly", name="Weekly", from_email="news@example.org")
        session.add(weekly)
        session.flush()
        issue = Issue(list_id=weekly.id, subject="Hello", body_markdown="Hi")
        session.add(issue)
        session.flush()
        sends = [
            Send(
                issue_id=issue.id,
                list_id=weekly.id,
                status="finished",
                subject=f"S{i}",
                html="",
                text="",
                total=1,
                started_at=now - timedelta(hours=i),
            )
            for i in range(3)
        ]
        session.add_all(sends)
        session.flush()
        ids = [s.id for s in sends]
        session.add(Delivery(send_id=ids[0], subscriber_id=1, email="a@example.com", status="sent"))

    dashboard._kept.clear()
    ticks = iter(range(1000))

    def clock() -> float:  # each reading one second later
        return float(next(ticks))

    with db.transaction(sessions) as session:
        first = dashboard.recent_reports(session, _sends(session, ids), budget=1.0, clock=clock)
    assert list(first) == ids[:1]  # the budget ran out before the second
    assert first[ids[0]].delivered == 1
    with db.transaction(sessions) as session:
        session.add(Delivery(send_id=ids[0], subscriber_id=2, email="b@example.com", status="sent"))
    with db.transaction(sessions) as session:
        again = dashboard.recent_reports(session, _sends(session, ids), budget=100.0, clock=lambda: 0.0)
        assert set(again) == set(ids)
        assert again[ids[0]].delivered == 1  # kept from the first read, within the minute
        later = dashboard.recent_reports(
            session, _sends(session, ids[:1]), budget=100.0, clock=lambda: dashboard.REPORT_KEPT + 1000
        )
        assert later[ids[0]].delivered == 2  # read anew once the minute is over
    dashboard._kept.clear()


def _sends(session, ids: list[int]) -> list[Send]:
    return [session.get(Send, i) for i in ids]
