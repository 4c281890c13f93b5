"""A list's welcome, sequence steps and goodbye, below the workers: who is due what, written once, on
SQLite and PostgreSQL; and one batch delivered twice, or after a crash, against a real SMTP server
and Redis (the worker's domain function, called as a redelivered task would call it).

The whole path with real workers, the web app and a moved clock is tests/test_automations_journey.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import SmtpSettings
from newsletter.content.issue_files import IssueSource, read_issue_file
from newsletter.content.issues import create_issue, delete_issue
from newsletter.delivery.automation_editions import AutomationEditions
from newsletter.delivery.automation_mailing import deliver_batch
from newsletter.delivery.batch_loop import DeliveryPolicy
from newsletter.delivery.send_control import SendControl
from newsletter.devtools.smtp_capture import CaptureServer
from newsletter.errors import Conflict, InvalidInput
from newsletter.mail.transport import SmtpTransport
from newsletter.store import db
from newsletter.store.models import Automation, AutomationMail, Subscriber, Subscription, utcnow
from subscribers import automation_mails, automations, consent, directory
from subscribers.bounces import record_bounce
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber, unsubscribe
from subscribers.tokens import TokenSigner
from tests.bouncekit import RENDER
from tests.sendkit import SAMPLE_ISSUE

KEY = "automation-test-secret-key-0123456789"
SIGNER = TokenSigner(KEY)


def issue_source(subject: str) -> IssueSource:
    body = f"Hello *|NAME:there|*,\n\n# {subject}\n\nA [link](https://example.org/{len(subject)}) and a paragraph.\n"
    return IssueSource(subject=subject, preheader="", template="issue", body_markdown=body, source=subject)


def setup_list(sessions: sessionmaker[Session]) -> list[int]:
    """The list weekly with three issues; returns their ids."""
    with db.transaction(sessions) as s:
        create_list(s, "weekly", name="The Weekly", from_email="news@example.org")
        return [create_issue(s, "weekly", issue_source(f"Lesson {n}"), RENDER)[0].id for n in (1, 2, 3)]


def rows(sessions: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    """Every automated email: (address, what, status), in the order they were written."""
    with sessions() as s:
        _, found = automation_mails.mail_log(s, "weekly")
    return [(r.email, r.what, r.status) for r in reversed(found)]


def mark_sent(sessions: sessionmaker[Session]) -> None:
    """Stand in for the workers: every pending row is sent."""
    with db.transaction(sessions) as s:
        s.execute(update(AutomationMail).where(AutomationMail.status == "pending").values(status="sent"))


def plan(sessions: sessionmaker[Session], days: float = 0) -> list[tuple[int, int, int]]:
    with db.transaction(sessions) as s:
        return automation_mails.plan_due_steps(s, utcnow() + timedelta(days=days), 100)


def confirm_link(sessions: sessionmaker[Session], email: str, slug: str = "weekly") -> str:
    """A form request for ``email`` and the token of its confirmation link."""
    with db.transaction(sessions) as s:
        asked = consent.request_subscription(s, slug, email)
        assert asked is not None
        sub = s.get(Subscription, asked.subscription_id)
        assert sub is not None
        return SIGNER.make(sub.subscriber_id, sub.list_id, "confirm", issued_at=asked.requested_at)


def test_the_welcome_goes_once_to_who_confirms_through_the_link_and_added_people_only_when_asked(sessions):
    setup_list(sessions)
    ann_link = confirm_link(sessions, "ann@example.com")
    with db.transaction(sessions) as s:
        consent.confirm(s, SIGNER, ann_link, max_age=86400)  # welcome still off: nothing is due
    assert rows(sessions) == []
    with db.transaction(sessions) as s:
        automations.set_welcome(s, "weekly", enabled=True)
    bob_link = confirm_link(sessions, "bob@example.com")
    with db.transaction(sessions) as s:
        consent.confirm(s, SIGNER, bob_link, max_age=86400)
        consent.confirm(s, SIGNER, bob_link, max_age=86400)  # the link followed twice
        add_subscriber(s, "weekly", "cid@example.com", confirmed=True)  # added: not welcomed by default
    assert rows(sessions) == [("bob@example.com", "welcome", "pending")]
    with db.transaction(sessions) as s:
        automations.set_welcome(s, "weekly", also_added=True)
        add_subscriber(s, "weekly", "dee@example.com", confirmed=True)
        add_subscriber(s, "weekly", "eve@example.com")  # unconfirmed: nothing yet
        fay = add_subscriber(s, "weekly", "fay@example.com").subscription.subscriber_id
        directory.set_subscription(s, fay, "weekly", "confirmed")  # the admin subscriber page, the API's PUT
    mark_sent(sessions)
    # Bob leaves and comes back through a new link: a list welcomes a person once, ever.
    with db.transaction(sessions) as s:
        left = unsubscribe(s, "weekly", "bob@example.com", reason="test")
        left.ended_at = utcnow() - timedelta(minutes=1)  # a request in the same second would count as before it
    bob_again = confirm_link(sessions, "bob@example.com")
    with db.transaction(sessions) as s:
        consent.confirm(s, SIGNER, bob_again, max_age=86400)
    assert sorted(rows(sessions)) == [
        ("bob@example.com", "welcome", "sent"),
        ("dee@example.com", "welcome", "sent"),
        ("fay@example.com", "welcome", "sent"),
    ]
    with sessions() as s:
        welcome = automations.overview(s, "weekly").welcome
    assert welcome.enabled and welcome.also_added and welcome.issue_id is None and welcome.sent == 3


def test_steps_are_written_once_at_each_persons_offset_only_for_those_who_confirmed_after_them(sessions):
    first, second, third = setup_list(sessions)
    with db.transaction(sessions) as s:
        add_subscriber(s, "weekly", "old@example.com", confirmed=True)  # before any step: never gets one
        step_ids = [automations.add_step(s, "weekly", i, d).id for i, d in ((third, 7), (first, 0), (second, 3))]
        add_subscriber(s, "weekly", "ann@example.com", confirmed=True)
        add_subscriber(s, "weekly", "bob@example.com", confirmed=True)
    with (
        db.transaction(sessions) as s,
        pytest.raises(InvalidInput, match=r"already step \d+ of weekly's sequence \(day 0\)"),
    ):
        automations.add_step(s, "weekly", first, 3)  # the same issue twice: each person would get it twice
    batches = plan(sessions, days=30)  # a scheduler back after a month: every step is due at once
    assert [b[0] for b in batches] == [step_ids[1], step_ids[2], step_ids[0]]  # written in the order they go
    assert plan(sessions, days=30) == []  # a second tick finds nothing new
    with db.transaction(sessions) as s:
        unsubscribe(s, "weekly", "bob@example.com", reason="test")
    assert plan(sessions, days=60) == []
    assert rows(sessions) == [
        ("ann@example.com", "day 0", "pending"),
        ("bob@example.com", "day 0", "pending"),
        ("ann@example.com", "day 3", "pending"),
        ("bob@example.com", "day 3", "pending"),
        ("ann@example.com", "day 7", "pending"),
        ("bob@example.com", "day 7", "pending"),
    ]
    with sessions() as s:
        view = automations.overview(s, "weekly")
    assert [(st.offset_days, st.counts.get("pending", 0)) for st in view.steps] == [(0, 2), (3, 2), (7, 2)]


def test_a_planning_reads_what_is_new_yet_misses_no_confirmation_committed_late(sessions):
    first, *_ = setup_list(sessions)
    with db.transaction(sessions) as s:
        step = automations.add_step(s, "weekly", first, 0)
        step.created_at = utcnow() - timedelta(hours=1)  # added an hour ago
        add_subscriber(s, "weekly", "ann@example.com", confirmed=True)
    assert len(plan(sessions)) == 1
    # A confirmation stamped before that planning but committed after it (a slow transaction, a web
    # server whose clock runs a little behind): within the margin, the next planning finds it.
    with db.transaction(sessions) as s:
        add_subscriber(s, "weekly", "bob@example.com", confirmed=True)
        s.execute(
            update(Subscription)
            .where(Subscription.subscriber_id == _subscriber_in(s, "bob@example.com"))
            .values(confirmed_at=utcnow() - timedelta(minutes=5))
        )
    assert [b[0] for b in plan(sessions, days=0.001)] == [step.id]
    assert plan(sessions, days=0.002) == []
    assert sorted(e for e, _, _ in rows(sessions)) == ["ann@example.com", "bob@example.com"]
    with sessions() as s:
        planned = s.get(Automation, step.id)
        assert planned is not None and planned.planned_until is not None
        assert planned.updated_at < planned.planned_until  # planning is no change to the step's content


def test_each_step_waits_for_its_own_day(sessions):
    first, second, _ = setup_list(sessions)
    with db.transaction(sessions) as s:
        automations.add_step(s, "weekly", first, 0)
        automations.add_step(s, "weekly", second, 3)
        add_subscriber(s, "weekly", "ann@example.com", confirmed=True)
    assert len(plan(sessions)) == 1
    mark_sent(sessions)
    assert plan(sessions, days=2.9) == []  # not before its day
    assert len(plan(sessions, days=3.01)) == 1


def test_ticks_running_at_once_write_each_step_once(sessions):
    first, *_ = setup_list(sessions)
    with db.transaction(sessions) as s:
        automations.add_step(s, "weekly", first, 0)
        for n in range(40):
            add_subscriber(s, "weekly", f"reader{n}@example.com", confirmed=True)
    start = threading.Barrier(4)
    found: list[list[tuple[int, int, int]]] = []

    def tick() -> None:
        start.wait()
        found.append(plan(sessions))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = [b for batches in found for b in batches]
    assert sum(last - first + 1 for _, first, last in written) == 40  # one tick wrote them, the others nothing
    assert Counter(email for email, _, _ in rows(sessions)) == {f"reader{n}@example.com": 1 for n in range(40)}


def test_goodbye_once_when_someone_leaves_by_themselves_never_after_a_complaint_or_a_removal(sessions):
    setup_list(sessions)
    with db.transaction(sessions) as s:
        automations.set_goodbye(s, "weekly", enabled=True)
        for who in ("ann", "bob", "cid", "dee", "eve"):
            add_subscriber(s, "weekly", f"{who}@example.com", confirmed=True)
    list_id = _list_id(sessions)
    ann = SIGNER.make(_subscriber(sessions, "ann@example.com"), list_id, "unsubscribe")
    with db.transaction(sessions) as s:
        consent.unsubscribe(s, SIGNER, ann, how=consent.HOW_ONE_CLICK)
        consent.unsubscribe(s, SIGNER, ann, how=consent.HOW_PAGE)  # twice: one goodbye
        # A mailed unsubscribe (List-Unsubscribe mailto): the person's own doing.
        record_bounce(
            s, email="bob@example.com", kind="unsubscribe", source="smtp", list_id=list_id,
            soft_limit=3, soft_days=30, proof="its signed List-Unsubscribe mailto token",
        )  # fmt: skip
        # A complaint, an editor's removal, and a hard bounce's suppression: no goodbye.
        record_bounce(
            s, email="cid@example.com", kind="complaint", source="smtp", list_id=list_id,
            soft_limit=3, soft_days=30, proof="test",
        )  # fmt: skip
        unsubscribe(s, "weekly", "dee@example.com", reason="removed by an admin")
        record_bounce(s, email="eve@example.com", kind="hard", source="smtp", soft_limit=3, soft_days=30, proof="t")
    assert sorted(rows(sessions)) == [
        ("ann@example.com", "goodbye", "pending"),
        ("bob@example.com", "goodbye", "pending"),
    ]


def test_configuration_refuses_what_it_cannot_send_and_an_issue_in_use_is_kept(sessions):
    first, second, _ = setup_list(sessions)
    with db.transaction(sessions) as s:
        create_list(s, "monthly", name="The Monthly", from_email="news@example.org")
        other = create_issue(s, "monthly", read_issue_file(SAMPLE_ISSUE), RENDER)[0].id
    with pytest.raises(InvalidInput, match="an issue of monthly, not of weekly") as refused:
        with db.transaction(sessions) as s:
            automations.add_step(s, "weekly", other, 3)
    assert refused.value.where == "ISSUE"
    with pytest.raises(InvalidInput, match="between 0 and 3650") as refused:
        with db.transaction(sessions) as s:
            automations.add_step(s, "weekly", first, 4000)
    assert refused.value.where == "--day"
    with pytest.raises(InvalidInput, match="no issue 999"):
        with db.transaction(sessions) as s:
            automations.set_welcome(s, "weekly", enabled=True, issue_id=999)
    with sessions() as s:
        assert automations.overview(s, "weekly").welcome.id is None  # nothing was stored
    with db.transaction(sessions) as s:
        automations.set_welcome(s, "weekly", enabled=True, issue_id=first)
        step = automations.add_step(s, "weekly", second, 1)
    with pytest.raises(Conflict, match="the welcome of weekly"):
        with db.transaction(sessions) as s:
            delete_issue(s, first)
    with db.transaction(sessions) as s:
        automations.set_welcome(s, "weekly", shipped_text=True)
        delete_issue(s, first)  # no longer the welcome
        automations.remove_step(s, "weekly", step.id)
    with pytest.raises(Conflict, match=r"step \d+ \(day 1\) of weekly's sequence \(removed; its log needs the issue\)"):
        with db.transaction(sessions) as s:
            delete_issue(s, second)


def _subscriber(sessions: sessionmaker[Session], email: str) -> int:
    with sessions() as s:
        found = s.scalar(select(Subscriber.id).where(Subscriber.email == email))
        assert found is not None
        return found


def _subscriber_in(session: Session, email: str) -> int:
    found = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
    assert found is not None
    return found


def _list_id(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(Subscription.list_id).limit(1)) or 0)


# --- one batch, as the worker delivers it -------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer(port=0)
    server.start()
    yield server
    server.stop()


def _deliver(sessions, capture: CaptureServer, redis_url: str, batch: tuple[int, int, int]):
    import redis

    client = redis.Redis.from_url(redis_url)
    editions = AutomationEditions(sessions, SIGNER, RENDER)
    try:
        with SmtpTransport(SmtpSettings("127.0.0.1", capture.port)) as transport:
            return deliver_batch(
                sessions,
                editions,
                transport,
                SendControl(client),
                *batch,
                policy=DeliveryPolicy(claim_seconds=30),
            )
    finally:
        client.close()


@pytest.mark.redis
def test_a_redelivered_batch_mails_nobody_twice_and_a_crashed_workers_journal_is_believed(
    sessions, capture, redis_url, tmp_path: Path
):
    first, *_ = setup_list(sessions)
    with db.transaction(sessions) as s:
        automations.add_step(s, "weekly", first, 0)
        for n in range(6):
            add_subscriber(s, "weekly", f"reader{n}@example.com", confirmed=True, name=f"Reader {n}")
    [batch] = plan(sessions)
    automation_id, first_row, _ = batch
    # A worker that died after the SMTP server took reader0's copy, before recording it: the copy is in the
    # journal (with its own Message-ID), the row still pending and its claim lapsed.
    editions = AutomationEditions(sessions, SIGNER, RENDER)
    edition = editions.edition(automation_id)
    import redis

    client = redis.Redis.from_url(redis_url)
    journal = SendControl(client).journal_writer(edition.key)
    journal.write(first_row, edition.message_id(first_row), 250, "2.0.0 OK: captured by a worker that died")
    journal.close()
    client.close()
    result = _deliver(sessions, capture, redis_url, batch)
    assert (result.sent, result.recovered, result.failed) == (5, 1, 0)
    again = _deliver(sessions, capture, redis_url, batch)  # the task redelivered, or a second one queued
    assert (again.sent, again.recovered) == (0, 0)
    received = Counter(r for m in capture.messages for r in m.rcpt_tos)
    assert received == {f"reader{n}@example.com": 1 for n in range(1, 6)}  # reader0's came from the dead worker
    with sessions() as s:
        _, log = automation_mails.mail_log(s, "weekly")
    by_address = {r.email: r for r in log}
    assert all(r.status == "sent" and r.smtp_code == 250 for r in log)
    assert by_address["reader0@example.com"].smtp_reply == "2.0.0 OK: captured by a worker that died"
    for m in capture.messages:
        parsed = message_from_bytes(m.data, policy=policy.default)
        assert parsed["Message-ID"] == by_address[m.rcpt_tos[0]].message_id
        assert parsed["Subject"] == "Lesson 1" and "List-Unsubscribe" in parsed


@pytest.mark.redis
def test_who_left_is_skipped_and_a_removed_step_goes_to_nobody_else(sessions, capture, redis_url):
    first, second, _ = setup_list(sessions)
    with db.transaction(sessions) as s:
        automations.add_step(s, "weekly", first, 0)
        step = automations.add_step(s, "weekly", second, 0)
        automations.set_goodbye(s, "weekly", enabled=True)
        for who in ("ann", "bob", "cid"):
            add_subscriber(s, "weekly", f"{who}@example.com", confirmed=True)
    batch, later = plan(sessions)
    assert later[0] == step.id
    with db.transaction(sessions) as s:
        unsubscribe(s, "weekly", "bob@example.com", reason="removed by an admin")
    assert _deliver(sessions, capture, redis_url, batch).skipped == 1
    with db.transaction(sessions) as s:
        automations.remove_step(s, "weekly", step.id)
    assert _deliver(sessions, capture, redis_url, later).sent == 0
    assert plan(sessions) == []
    got = sorted((r, m.subject) for m in capture.messages for r in m.rcpt_tos)
    assert got == [("ann@example.com", "Lesson 1"), ("cid@example.com", "Lesson 1")]
    reasons = {(e, w): st for e, w, st in rows(sessions)}
    assert reasons[("bob@example.com", "day 0")] == "skipped"
    assert reasons[("ann@example.com", "day 0")] == "skipped"  # the second "day 0", removed before it went out
    with sessions() as s:
        _, log = automation_mails.mail_log(s, "weekly", status="skipped")
    assert {r.smtp_reply for r in log} == {
        "not sent: left the list before it went out",
        "not sent: the step was removed from the sequence before it went out",
    }


@pytest.mark.redis
def test_a_persons_emails_go_in_order_whatever_order_their_batches_run_in(sessions, capture, redis_url):
    first, second, third = setup_list(sessions)
    with db.transaction(sessions) as s:
        automations.set_welcome(s, "weekly", enabled=True, also_added=True)
        for issue_id, day in ((first, 0), (second, 3), (third, 7)):
            automations.add_step(s, "weekly", issue_id, day)
        add_subscriber(s, "weekly", "ann@example.com", confirmed=True)
        add_subscriber(s, "weekly", "bob@example.com", confirmed=True)
    plan(sessions, days=30)  # every step due at once, beside the welcome still pending
    with sessions() as s:
        batches = automation_mails.due_batches(s, 100)
    assert len(batches) == 4

    def run_all_backwards() -> int:
        """Each batch, the last step's first; then the time its held-back rows wait passes."""
        sent = sum(_deliver(sessions, capture, redis_url, b).sent for b in reversed(batches))
        with db.transaction(sessions) as s:
            s.execute(update(AutomationMail).values(next_attempt_at=None))
        return sent

    assert run_all_backwards() == 2  # only the welcomes: every step waited for the email before it
    with db.transaction(sessions) as s:
        unsubscribe(s, "weekly", "bob@example.com", reason="test")
    while run_all_backwards():
        pass
    got: dict[str, list[str]] = {}
    for m in capture.messages:
        got.setdefault(m.rcpt_tos[0], []).append(m.subject)
    assert got == {
        "ann@example.com": ["Welcome to The Weekly", "Lesson 1", "Lesson 2", "Lesson 3"],
        "bob@example.com": ["Welcome to The Weekly"],
    }
    assert Counter(status for _, _, status in rows(sessions)) == {"sent": 5, "skipped": 3}


def test_erasing_a_subscriber_anonymises_their_automated_emails(sessions):
    setup_list(sessions)
    with db.transaction(sessions) as s:
        automations.set_welcome(s, "weekly", enabled=True, also_added=True)
        automations.set_goodbye(s, "weekly", enabled=True)
        ann = add_subscriber(s, "weekly", "ann@example.com", confirmed=True).subscription.subscriber_id
        add_subscriber(s, "weekly", "bob@example.com", confirmed=True)
    mark_sent(sessions)
    with db.transaction(sessions) as s:
        automation_mails.goodbye_due(s, _list_id_in(s), ann)  # one still pending when the erasure comes
        directory.delete_subscriber(s, ann, erase=True)
    assert sorted(rows(sessions)) == [("bob@example.com", "welcome", "sent")]  # ann had no deliveries: gone
    with sessions() as s:
        assert s.scalar(select(AutomationMail.id).where(AutomationMail.subscriber_id == ann)) is None


def _list_id_in(session: Session) -> int:
    return int(session.scalar(select(Subscription.list_id).limit(1)) or 0)


@pytest.mark.redis
def test_what_a_step_sends_is_frozen_until_refreshed_so_an_edited_issue_reaches_no_one_half_written(
    sessions, capture, redis_url
):
    from newsletter.content.issues import update_issue
    from newsletter.delivery.automation_editions import freeze, refresh

    first, *_ = setup_list(sessions)
    with db.transaction(sessions) as s:
        step = automations.add_step(s, "weekly", first, 0)
        freeze(s, step, RENDER)  # as every edge does when it sets one up
        add_subscriber(s, "weekly", "ann@example.com", confirmed=True)
    with db.transaction(sessions) as s:
        update_issue(s, first, issue_source("Lesson 1, half rewrit"), RENDER)  # an editor's autosave
    with sessions() as s:
        assert [v.issue_changed for v in automations.overview(s, "weekly").steps] == [True]
    [batch] = plan(sessions)
    assert _deliver(sessions, capture, redis_url, batch).sent == 1
    with db.transaction(sessions) as s:
        update_issue(s, first, issue_source("Lesson 1, rewritten"), RENDER)
        assert [a.subject for a in refresh(s, "weekly", RENDER)] == ["Lesson 1, rewritten"]
        add_subscriber(s, "weekly", "bob@example.com", confirmed=True)
    with sessions() as s:
        assert [v.issue_changed for v in automations.overview(s, "weekly").steps] == [False]
    [batch] = plan(sessions, days=0.001)
    assert _deliver(sessions, capture, redis_url, batch).sent == 1
    assert [(m.rcpt_tos[0], m.subject) for m in capture.messages] == [
        ("ann@example.com", "Lesson 1"),
        ("bob@example.com", "Lesson 1, rewritten"),
    ]


def test_a_welcome_whose_issue_no_longer_renders_is_refused_on_yet_can_be_switched_off(sessions):
    from newsletter.delivery.automation_editions import freeze_if_on
    from newsletter.errors import RenderError
    from newsletter.store.models import Issue

    first, *_ = setup_list(sessions)
    with db.transaction(sessions) as s:
        freeze_if_on(s, automations.set_welcome(s, "weekly", enabled=True, issue_id=first), RENDER)
    with db.transaction(sessions) as s:
        s.execute(update(Issue).where(Issue.id == first).values(template="gone"))  # its template was removed
    with pytest.raises(RenderError, match="gone"):
        with db.transaction(sessions) as s:
            freeze_if_on(s, automations.set_welcome(s, "weekly", also_added=True), RENDER)
    with db.transaction(sessions) as s:
        freeze_if_on(s, automations.set_welcome(s, "weekly", enabled=False), RENDER)
    with sessions() as s:
        welcome = automations.overview(s, "weekly").welcome
    assert not welcome.enabled and not welcome.also_added  # the refused change stored nothing


# --- the shipped texts in the list's language, end to end ------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_a_german_lists_shipped_welcome_and_goodbye_arrive_in_german_after_its_language_changes(newsroom):
    """Set up in English, then the list turns German (`lists update --language de`): the frozen shipped texts
    are frozen again in German, and a reader who subscribes through the form, confirms and leaves with the
    one-click link gets the welcome and the goodbye in German, subject, body and footer, from a real worker."""
    import re
    import time
    from email.message import EmailMessage

    from fastapi.testclient import TestClient

    from newsletter.config import Settings
    from newsletter.http.app import create_app
    from tests.textkit import body_text, must_match

    room, cli = newsroom, newsroom.cli
    cli("lists", "create", "weekly", "--name", "Die Woche", "--from-email", "news@example.org")
    cli("automations", "welcome", "weekly", "--on")
    cli("automations", "goodbye", "weekly", "--on")
    changed = cli("lists", "update", "weekly", "--language", "de").stdout
    assert "in Deutsch." in changed and "Rendered its shipped welcome and goodbye again, in Deutsch." in changed
    room.start_worker()

    def got(address: str) -> list[EmailMessage]:
        return [
            message_from_bytes(m.data, policy=policy.default)
            for m in list(room.capture.messages)
            if address in m.rcpt_tos
        ]

    def wait_for_mails(address: str, count: int) -> list[EmailMessage]:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if len(found := got(address)) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{address} got {[str(m['Subject']) for m in got(address)]}, not {count} emails")

    settings = Settings.from_environ(room.cli.env)
    with TestClient(create_app(settings), base_url="https://news.example.org") as web:
        for address, name in (("eva@example.com", "Eva"), ("udo@example.com", "")):
            assert web.post("/subscribe/weekly", data={"email": address, "name": name}).status_code == 200
            [confirmation] = wait_for_mails(address, 1)
            token = must_match(re.search(r"/confirm/(v1\.[0-9.]+[A-Za-z0-9_-]+)", body_text(confirmation))).group(1)
            assert web.post(f"/confirm/{token}").status_code == 200
        _, welcome = wait_for_mails("eva@example.com", 2)
        _, welcome_udo = wait_for_mails("udo@example.com", 2)

        assert welcome["Subject"] == "Willkommen bei Die Woche"
        text, page = body_text(welcome).replace("\r\n", "\n"), body_text(welcome, "html")
        flat = " ".join(text.split())
        assert text.startswith("Die Woche\n\nHallo Eva,\n\n"), text
        assert (
            "Vielen Dank für die Bestätigung Ihres Abonnements. Ab jetzt erhalten Sie Die Woche an diese Adresse:"
            in flat
        )
        assert "Am Ende jeder E-Mail von uns finden Sie einen Link zu Ihren Einstellungen" in flat
        # The layout's footer, in German too, with the reader's own links.
        assert (
            "Sie erhalten diese E-Mail aufgrund Ihres Abonnements von Die Woche unter der Adresse eva@example.com"
            in flat
        )
        assert "Diese E-Mail im Browser ansehen:" in text and "Abmelden:" in text and "Einstellungen ändern:" in text
        assert '<html lang="de"' in page and "Willkommen bei Die Woche</h1>" in page
        assert "Ihr Abonnement von Die Woche ist bestätigt: So geht es weiter." in page  # the preheader
        assert ">Abmelden</a>" in page and ">Einstellungen ändern</a>" in page
        assert "Hallo zusammen," in body_text(welcome_udo)  # no name: the German fallback
        english = ("Hello", "Thank you", "Welcome", "unsubscribe with one click", "You are receiving", "Unsubscribe")
        assert not [w for w in english if w in text + page], [w for w in english if w in text + page]

        link = must_match(re.search(r"https://news\.example\.org/unsubscribe/(v1\.[0-9.]+[A-Za-z0-9_-]+)", text))
        left = web.post(f"/unsubscribe/{link.group(1)}", data={"List-Unsubscribe": "One-Click"})
        assert left.status_code == 200
        *_, goodbye = wait_for_mails("eva@example.com", 3)

    assert goodbye["Subject"] == "Sie haben Die Woche abbestellt"
    text, page = body_text(goodbye).replace("\r\n", "\n"), body_text(goodbye, "html")
    flat = " ".join(text.split())
    assert text.startswith("Die Woche\n\nHallo Eva,\n\n"), text
    assert "Sie erhalten Die Woche nicht mehr an diese Adresse: eva@example.com" in flat
    assert "Diese E-Mail bestätigt dies lediglich: Weitere E-Mails folgen nicht." in flat
    assert "Sie erhalten diese eine E-Mail, weil diese Adresse von Die Woche abgemeldet wurde: eva@example.com" in flat
    assert '<html lang="de"' in page and "Sie haben Die Woche abbestellt</h1>" in page
    assert "weil <span" in page and "von Die Woche abgemeldet wurde." in page  # its own footer, in German
    assert "Sie erhalten Die Woche nicht mehr." in page  # the preheader
    assert not [w for w in ("Hello", "You ", "Thank you", " left ") if w in text + page]


def test_a_change_of_language_freezes_the_shipped_texts_again_but_not_what_an_issue_sends(sessions):
    from newsletter.delivery.automation_editions import freeze_if_on, refresh_shipped
    from subscribers.lists import update_list

    first, *_ = setup_list(sessions)
    with db.transaction(sessions) as s:
        welcome = automations.set_welcome(s, "weekly", enabled=True, issue_id=first)
        goodbye = automations.set_goodbye(s, "weekly", enabled=True)
        for automation in (welcome, goodbye):
            freeze_if_on(s, automation, RENDER)
        step = automations.add_step(s, "weekly", first, 3)
        freeze_if_on(s, step, RENDER)
    with db.transaction(sessions) as s:
        changed = update_list(s, "weekly", language="fr")
        assert [(a.kind, a.subject) for a in refresh_shipped(s, changed, RENDER)] == [
            ("goodbye", "Votre abonnement à The Weekly est terminé")
        ]
    with sessions() as s:
        frozen = {a.kind: a for a in s.scalars(select(Automation))}
        assert 'lang="fr"' in (frozen["goodbye"].html or "") and "Se désabonner" not in (frozen["goodbye"].text or "")
        assert "Bonjour" in (frozen["goodbye"].text or "") and "à vous" in (frozen["goodbye"].text or "")
        for kind in ("welcome", "step"):  # an issue's: as frozen, English footer, until `automations refresh`
            assert 'lang="en"' in (frozen[kind].html or "") and "Unsubscribe:" in (frozen[kind].text or "")
