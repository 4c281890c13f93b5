"""Sending one issue to several lists at once: one copy per address, each with a list it is on.

Real services: the CLI, `newsletter worker` processes, the capture SMTP server, `newsletter web`
for the one-click unsubscribe; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re

import httpx

from tests.test_web_journey import free_port, start_web
from tests.textkit import body_text


def _one_click(room, address: str) -> httpx.Response:
    mail = room.parsed(address)
    url = re.match(r"<(http[^>]+)>", mail["List-Unsubscribe"])
    assert url is not None, mail["List-Unsubscribe"]
    return httpx.post(
        url.group(1),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )


def _on(room, slug: str, status: str) -> str:
    return room.cli("subscribers", "ls", slug, "--status", status).stdout


def test_overlapping_lists_get_one_copy_each_with_an_unsubscribe_link_of_their_own_list(newsroom_any_db):
    room = newsroom_any_db
    port = free_port()
    room.cli.env["NEWSLETTER_BASE_URL"] = f"http://127.0.0.1:{port}"
    weekly = room.setup_list(3)  # reader00000..2 on weekly (created first: the lower list id)
    room.cli("lists", "create", "monthly", "--name", "The Monthly", "--from-email", "monthly@example.org")
    for address in (weekly[1], weekly[2], "only-monthly@example.com"):
        room.cli("subscribers", "add", "monthly", address, "--confirmed")
    room.cli("subscribers", "add", "monthly", "unconfirmed@example.com")  # not mailed
    room.cli("subscribers", "add", "monthly", "gone@example.com", "--confirmed")
    room.cli("suppressions", "add", "gone@example.com")  # not mailed either
    issue = room.create_issue()
    room.start_worker(concurrency=2)
    web = start_web(room.cli.env, room.tmp, port)
    try:
        send_id = room.send(issue, "--list", "weekly", "--list", "monthly")
        status = room.wait_status(send_id)
        assert status["sent"] == 4 and status["total"] == 4
        assert status["list"] == "weekly"  # the first list is the send's own
        room.wait_received(4)
        assert room.received() == {weekly[0]: 1, weekly[1]: 1, weekly[2]: 1, "only-monthly@example.com": 1}

        # The sender and List-Id are the first list's; the unsubscribe link is a list the address is on.
        only_monthly = room.parsed("only-monthly@example.com")
        assert "news@example.org" in only_monthly["From"] and "<weekly." in only_monthly["List-Id"]
        footer = " ".join(body_text(only_monthly).split())  # the footer names both lists, not Weekly alone
        assert "you subscribed to Info War Weekly or The Monthly as only-monthly@example.com" in footer
        assert _one_click(room, "only-monthly@example.com").status_code == 200
        assert "only-monthly@example.com" in _on(room, "monthly", "unsubscribed")
        # On both lists: the lowest list id, weekly; monthly keeps them.
        assert _one_click(room, weekly[1]).status_code == 200
        assert weekly[1] in _on(room, "weekly", "unsubscribed")
        assert weekly[1] in _on(room, "monthly", "confirmed")

        # A second send of the issue to either list is refused without a word, naming the earlier one.
        refused = room.cli("send", issue, "--list", "monthly", check=False)
        assert refused.returncode == 1
        assert f"already has a send to monthly: send {send_id}" in refused.stderr
        assert "--list monthly --again" in refused.stderr
        # Only the new ones, counted across the lists: a newcomer on monthly, and no one else.
        room.cli("subscribers", "add", "monthly", "newcomer@example.com", "--confirmed")
        again = room.send(issue, "--list", "monthly", "--list", "weekly", "--only-new")
        assert room.wait_status(again)["sent"] == 1
        room.wait_received(5)
        assert room.received()["newcomer@example.com"] == 1 and sum(room.received().values()) == 5
    finally:
        web.stop()


def test_one_list_keeps_the_narrow_rows_and_several_lists_record_each_rows_list(newsroom):
    """A send to one list writes no list id on its deliveries; a send to several writes the lowest one."""
    from sqlalchemy import text

    from newsletter.store import db

    room = newsroom
    addresses = room.setup_list(2)
    room.cli("lists", "create", "monthly", "--name", "The Monthly", "--from-email", "monthly@example.org")
    room.cli("subscribers", "add", "monthly", addresses[1], "--confirmed")
    room.cli("subscribers", "add", "monthly", "m@example.com", "--confirmed")
    single = room.send(room.create_issue())
    several = room.send(room.create_issue(), "--list", "monthly", "--list", "weekly")
    engine = db.make_engine(room.cli.env["NEWSLETTER_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            lists: dict[str, int] = dict(conn.execute(text("SELECT slug, id FROM mailing_lists")).tuples().all())
            rows = conn.execute(text("SELECT send_id, email, list_id FROM deliveries ORDER BY send_id, email")).all()
            extra = conn.execute(text("SELECT send_id, list_id FROM send_lists")).all()
            own = conn.execute(text("SELECT list_id FROM sends WHERE id = :id"), {"id": int(several)}).scalar()
    finally:
        engine.dispose()
    assert [r for r in rows if r.send_id == int(single)] == [
        (int(single), addresses[0], None),
        (int(single), addresses[1], None),
    ]
    assert [(r.email, r.list_id) for r in rows if r.send_id == int(several)] == [
        ("m@example.com", lists["monthly"]),
        (addresses[0], lists["weekly"]),
        (addresses[1], lists["weekly"]),  # on both: the lower id
    ]
    assert own == lists["monthly"] and extra == [(int(several), lists["weekly"])]


def test_a_scheduled_send_to_several_lists_and_a_segment_starts_with_what_was_frozen(sessions):
    """Scheduling keeps the lists and the segment's filter; starting later snapshots them, whatever the
    segment became meanwhile. A segment that matches no one is refused, saying so."""
    from datetime import timedelta

    import pytest
    from sqlalchemy import select

    from newsletter.content.issue_files import read_issue_file
    from newsletter.content.issues import create_issue
    from newsletter.delivery import scheduling, sending
    from newsletter.delivery.audience import SendRefused
    from newsletter.store.models import Delivery, utcnow
    from subscribers.lists import create_list
    from subscribers.segments import create_segment
    from subscribers.subscriptions import add_subscriber
    from tests.bouncekit import RENDER
    from tests.sendkit import SAMPLE_ISSUE

    with sessions.begin() as s:
        for slug in ("weekly", "monthly"):
            create_list(s, slug, name=slug.title(), from_email="news@example.org")
        for slug, address in (("weekly", "ann@a.org"), ("weekly", "bob@b.org"), ("monthly", "bob@b.org")):
            add_subscriber(s, slug, address, confirmed=True)
        add_subscriber(s, "monthly", "cid@a.org", confirmed=True)
        create_segment(s, "weekly", "a", 'domain = "a.org"')
        create_segment(s, "weekly", "nobody", 'domain = "z.org"')
        issue, _ = create_issue(s, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
        issue_id = issue.id
        with pytest.raises(SendRefused, match=r"segment nobody of weekly matches none of its 2 confirmed subscribers"):
            sending.start_send(s, issue_id, RENDER, segment="nobody", batch_size=10)
        at = utcnow() + timedelta(hours=1)
        both = scheduling.schedule_send(s, issue_id, at, RENDER, list_slugs=["monthly", "weekly"]).id
    with sessions.begin() as s:
        # The lists of the scheduled send count: a send to weekly alone is a second send.
        with pytest.raises(SendRefused, match=f"already has a send to weekly: send {both} is scheduled"):
            scheduling.schedule_send(s, issue_id, at, RENDER, list_slug="weekly")
        other, _ = create_issue(s, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
        segment_send = scheduling.schedule_send(s, other.id, at, RENDER, segment="a").id
        create_segment(s, "weekly", "a", 'domain = "b.org"', replace=True)  # after scheduling: changes nothing
    later = at + timedelta(seconds=1)
    with sessions.begin() as s:
        started = [scheduling.start_scheduled(s, i, RENDER, batch_size=10, now=later) for i in (both, segment_send)]
        assert all(x is not None and x.batches for x in started)
        got = {
            send_id: sorted(s.scalars(select(Delivery.email).where(Delivery.send_id == send_id)))
            for send_id in (both, segment_send)
        }
    assert got == {both: ["ann@a.org", "bob@b.org", "cid@a.org"], segment_send: ["ann@a.org"]}


def test_a_send_to_several_lists_tracks_no_more_than_every_list_allows(sessions):
    from sqlalchemy import func, select

    from newsletter.content.issue_files import read_issue_file
    from newsletter.content.issues import create_issue
    from newsletter.delivery import sending
    from newsletter.store.models import SendLink
    from subscribers.lists import create_list
    from subscribers.subscriptions import add_subscriber
    from tests.bouncekit import RENDER
    from tests.sendkit import SAMPLE_ISSUE

    with sessions.begin() as s:
        for slug, tracking in (("counted", "individual"), ("anon", "anonymous"), ("quiet", "off")):
            create_list(s, slug, name=slug.title(), from_email="news@example.org", tracking=tracking)
            add_subscriber(s, slug, f"{slug}@example.org", confirmed=True)
        result = {}
        for others in (["counted"], ["counted", "anon"], ["counted", "anon", "quiet"]):
            issue, _ = create_issue(s, "counted", read_issue_file(SAMPLE_ISSUE), RENDER)
            send, _ = sending.start_send(s, issue.id, RENDER, list_slugs=others, batch_size=10)
            links = s.scalar(select(func.count()).select_from(SendLink).where(SendLink.send_id == send.id))
            result[len(others)] = (send.tracking, send.reader_key is not None, bool(links))
    assert result == {
        1: ("individual", True, True),  # one list: its own tracking, as before
        2: ("anonymous", True, True),
        3: ("off", False, False),  # a list that counts nothing: nothing is counted for anyone
    }
