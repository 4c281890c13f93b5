"""Subject tests on both databases: the test share is exact, random and reproducible, split half and half;
the rest is held back from every claim until the test is decided, once; untracked lists are refused with
nothing stored; each subject's opens and clicks are counted apart and survive the report's roll-up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.content.issue_files import read_issue_file
from newsletter.content.issues import create_issue
from newsletter.delivery import sending, subject_tests, subject_variants
from newsletter.delivery.audience import Repeat
from newsletter.delivery.recipient_store import SqlRecipientStore
from newsletter.delivery.subject_variants import SubjectTestPlan, UntrackedLists
from newsletter.engagement import rollup
from newsletter.engagement.recorder import EventRecorder, TrackedSends
from newsletter.engagement.report import send_report
from newsletter.engagement.variant_figures import VariantFigures
from newsletter.errors import Conflict, InvalidInput
from newsletter.store import db
from newsletter.store.models import Delivery, EngagementEvent, Send, SendLink, SubjectTest, utcnow
from newsletter.store.states import DeliveryStatus, EngagementKind, SendStatus, SubjectTestState
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from tests.bouncekit import RENDER
from tests.sendkit import SAMPLE_ISSUE

PLAN = SubjectTestPlan("A better subject", 20, 7200)


def _list(session: Session, slug: str, count: int, *, tracking: str = "anonymous", first: int = 0) -> None:
    create_list(session, slug, name=f"The {slug.title()}", from_email="news@example.org", tracking=tracking)
    for i in range(first, first + count):
        add_subscriber(session, slug, f"r{i:04d}@example.com", confirmed=True, source="admin")


def _issue(session: Session, slug: str = "weekly") -> int:
    return create_issue(session, slug, read_issue_file(SAMPLE_ISSUE), RENDER)[0].id


def _start(
    sessions: sessionmaker[Session], issue_id: int, test: SubjectTestPlan | None = PLAN, **kw
) -> tuple[int, list]:
    with db.transaction(sessions) as s:
        send, batches = sending.start_send(
            s, issue_id, RENDER, batch_size=kw.pop("batch_size", 10), subject_test=test, **kw
        )
        return send.id, batches


def _variants(sessions: sessionmaker[Session], send_id: int) -> dict[int, int | None]:
    """subscriber id -> variant of the send's rows."""
    with sessions() as s:
        rows = s.execute(select(Delivery.subscriber_id, Delivery.variant).where(Delivery.send_id == send_id))
        return {subscriber: variant for subscriber, variant in rows}


def test_the_test_share_is_exact_random_reproducible_and_split_half_and_half(sessions):
    with db.transaction(sessions) as s:
        _list(s, "weekly", 203)
        issue_id = _issue(s)
    send_id, batches = _start(sessions, issue_id)
    variants = _variants(sessions, send_id)
    assert len(variants) == 203  # everyone's row is in the one snapshot
    a = sorted(i for i, v in variants.items() if v == 1)
    b = sorted(i for i, v in variants.items() if v == 2)
    assert (len(a), len(b)) == (21, 20)  # 20 % of 203 is 40.6: 41 in the test, A one more than B
    with sessions() as s:
        test = s.get(SubjectTest, send_id)
        send = s.get(Send, send_id)
        assert test is not None and send is not None and send.started_at is not None
        assert test.state == SubjectTestState.TESTING
        assert (test.recipients_a, test.recipients_b, test.remainder) == (21, 20, 162)
        assert test.decide_at == send.started_at + timedelta(hours=2)
        ids = dict(s.execute(select(Delivery.subscriber_id, Delivery.id).where(Delivery.send_id == send_id)).all())
    # Made again from the seed alone: the ranking's first 41, alternately A and B.
    ranking = sorted(variants, key=lambda i: (subject_variants.rank_key_of(i, test.seed), i))
    assert sorted(ranking[:41:2]) == a and sorted(ranking[1:41:2]) == b
    # Random, not the first subscribers: the test share is spread over the whole list.
    everyone = sorted(variants)
    assert set(a + b) & set(everyone[:41]) != set(a + b)
    assert set(a + b) & set(everyone[-81:]) and set(a + b) & set(everyone[:81])
    # Only the test share's rows are batched now; they are the send's first ids.
    batched = {i for first, last in batches for i in range(first, last + 1)}
    test_ids = {ids[i] for i in a + b}
    assert test_ids <= batched and not batched & ({ids[i] for i in everyone} - test_ids)
    # Another send of the issue (again) draws another seed: another random share.
    send2, _ = _start(sessions, issue_id, repeat=Repeat.AGAIN)
    again = _variants(sessions, send2)
    assert {i for i, v in again.items() if v} != set(a + b)


def test_the_rest_is_held_back_from_claims_and_batches_until_decided_then_carries_the_winner(sessions):
    with db.transaction(sessions) as s:
        _list(s, "weekly", 50)
        issue_id = _issue(s)
    send_id, batches = _start(sessions, issue_id, SubjectTestPlan("Other", 20, 3600), batch_size=1000)
    with sessions() as s:
        first, last = s.execute(
            select(func.min(Delivery.id), func.max(Delivery.id)).where(Delivery.send_id == send_id)
        ).one()
    whole = SqlRecipientStore(sessions, send_id, first, last)
    taken = whole.take(30)
    assert taken is not None
    assert sorted(r.variant or 0 for r in taken.recipients) == [1] * 5 + [2] * 5  # 10 of 50; nobody of the rest
    whole.release()
    with sessions() as s:
        assert sending.pending_batches(s, send_id, 1000, due_only=True) == batches
        paused = sending.pause_send(s, send_id)
        s.commit()
        assert paused.status == SendStatus.PAUSED
    with db.transaction(sessions) as s:
        resumed, again = sending.resume_send(s, send_id, 1000)  # the rest waits: still sending, not finished
        assert resumed.status == SendStatus.SENDING and again == batches
    # An editor picks B before the time: the rest is released with B, in the same transaction.
    with db.transaction(sessions) as s:
        decided = subject_tests.decide_now(s, send_id, batch_size=1000, by="ann", winner=2)
        assert decided.winner == "B" and decided.remainder == 40 and decided.batches
        assert "chosen by ann" in decided.reason
    later = SqlRecipientStore(sessions, send_id, first, last).take(30)
    assert later is not None and len(later.recipients) == 50
    assert {r.variant for r in later.recipients if r.delivery_id not in {t.delivery_id for t in taken.recipients}} == {
        2
    }
    with db.transaction(sessions) as s, pytest.raises(Conflict, match="decided already"):
        subject_tests.decide_now(s, send_id, batch_size=1000, by="bob")


def test_a_test_is_decided_once_whoever_tries_and_a_cancelled_rest_is_never_sent(sessions):
    with db.transaction(sessions) as s:
        _list(s, "weekly", 40)
        issue_id = _issue(s)
        other_issue = _issue(s)
    send_id, _ = _start(sessions, issue_id, SubjectTestPlan("Other", 50, 600))
    with sessions() as s:
        test = s.get(SubjectTest, send_id)
        assert test is not None and test.decide_at is not None
        decide_at = test.decide_at
        assert subject_tests.due(s, decide_at - timedelta(seconds=1)) == []
        assert subject_tests.due(s, decide_at) == [send_id]
    with db.transaction(sessions) as s:
        assert subject_tests.decide_due(s, send_id, batch_size=10, now=decide_at - timedelta(seconds=1)) is None
        first = subject_tests.decide_due(s, send_id, batch_size=10, now=decide_at)
        assert first is not None and first.winner == "A"  # no clicks, no opens: a tie, and A by default
        assert "A, the issue's own subject" in first.reason
    with db.transaction(sessions) as s:  # a second tick (or one run again after a kill) finds it decided
        assert subject_tests.decide_due(s, send_id, batch_size=10, now=decide_at) is None
        assert subject_tests.due(s, decide_at + timedelta(hours=1)) == []
    # The rest of another send is cancelled instead: its rows are cancelled, and nothing releases them.
    cancelled_id, _ = _start(sessions, other_issue, SubjectTestPlan("Other", 50, 600))
    with db.transaction(sessions) as s:
        assert subject_tests.cancel_rest(s, cancelled_id, by="ann") == 20
    with sessions() as s:
        test = s.get(SubjectTest, cancelled_id)
        assert test is not None and test.state == SubjectTestState.CANCELLED and test.winner is None
        statuses = dict(
            s.execute(
                select(Delivery.status, func.count()).where(Delivery.send_id == cancelled_id).group_by(Delivery.status)
            ).all()
        )
        assert statuses == {DeliveryStatus.PENDING: 20, DeliveryStatus.CANCELLED: 20}
        decide_at = test.decide_at
    with db.transaction(sessions) as s:
        assert subject_tests.decide_due(s, cancelled_id, batch_size=10, now=decide_at + timedelta(days=1)) is None
        with pytest.raises(Conflict, match="cancelled already"):
            subject_tests.cancel_rest(s, cancelled_id, by="bob")


def test_several_lists_a_segment_and_only_new_sends_take_a_test_over_whoever_they_mail(sessions):
    with db.transaction(sessions) as s:
        _list(s, "weekly", 30)
        _list(s, "monthly", 30, first=20)  # r0020..r0029 are on both
        issue_id = _issue(s)
    send_id, _ = _start(sessions, issue_id, list_slugs=["weekly", "monthly"])
    variants = _variants(sessions, send_id)
    assert len(variants) == 50  # each address once
    assert sorted(v for v in variants.values() if v) == [1] * 5 + [2] * 5
    with db.transaction(sessions) as s:
        for i in range(50, 60):
            add_subscriber(s, "weekly", f"r{i:04d}@example.com", confirmed=True, source="admin")
    new_id, _ = _start(sessions, issue_id, list_slugs=["weekly"], repeat=Repeat.ONLY_NEW)
    assert sorted(v or 0 for v in _variants(sessions, new_id).values()) == [0] * 8 + [1, 2]  # 20 % of the 10 new
    from subscribers import segments

    with db.transaction(sessions) as s:
        segments.create_segment(s, "monthly", "tens", 'email contains "0@example.com"')
    seg_id, _ = _start(
        sessions, _issue_for(sessions, "monthly"), segment="tens", test=SubjectTestPlan("Other", 100, 60)
    )
    assert sorted(v or 0 for v in _variants(sessions, seg_id).values()) == [1, 1, 2]  # r0020, r0030, r0040: all in


def _issue_for(sessions: sessionmaker[Session], slug: str) -> int:
    with db.transaction(sessions) as s:
        return _issue(s, slug)


def test_untracked_lists_and_tests_too_small_are_refused_and_nothing_is_stored(sessions):
    with db.transaction(sessions) as s:
        _list(s, "weekly", 10)
        _list(s, "quiet", 10, tracking="off", first=100)
        issue_id = _issue(s)
    with sessions() as s, pytest.raises(UntrackedLists) as refused:
        sending.start_send(s, issue_id, RENDER, batch_size=10, list_slugs=["weekly", "quiet"], subject_test=PLAN)
    assert refused.value.slugs == ("quiet",)
    assert "quiet has tracking off" in str(refused.value)
    assert "`newsletter lists update quiet --tracking anonymous`" in str(refused.value)
    with sessions() as s, pytest.raises(InvalidInput, match="each subject needs at least one reader"):
        sending.start_send(s, issue_id, RENDER, batch_size=10, subject_test=SubjectTestPlan("Other", 10, 60))
    subject = read_issue_file(SAMPLE_ISSUE).subject
    with sessions() as s, pytest.raises(InvalidInput, match="the issue's own"):
        sending.start_send(s, issue_id, RENDER, batch_size=10, subject_test=SubjectTestPlan(subject, 50, 60))
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Send)) == 0
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0
        assert s.scalar(select(func.count()).select_from(SubjectTest)) == 0


def test_the_editors_input_is_checked_naming_the_field():
    assert subject_variants.plan(None) is None
    assert subject_variants.plan("B", 20, "2h") == SubjectTestPlan("B", 20, 7200)
    assert subject_variants.plan(" B ", None, "1h30m") == SubjectTestPlan("B", 20, 5400)
    assert subject_variants.plan("B", 10, "0s").decide_after == 0  # type: ignore[union-attr]
    for args, where, text in [
        ((None, 20, None), "--test-share", "only with a subject test"),
        (("", 20, "2h"), "--subject-test", "empty"),
        (("B\r\nBcc: x@example.com", 20, "2h"), "--subject-test", "control character"),
        (("B", 0, "2h"), "--test-share", "from 1 to 100"),
        (("B", 101, "2h"), "--test-share", "from 1 to 100"),
        (("B", 20, "2 weeks"), "--decide-after", "not a duration"),
        (("B", 20, "31d"), "--decide-after", "longer than 30 days"),
    ]:
        with pytest.raises(InvalidInput) as bad:
            subject_variants.plan(*args)
        assert bad.value.where == where and text in bad.value.message
    with pytest.raises(InvalidInput) as bad:
        subject_variants.plan(
            "B", 20, "soon", fields=("subject_test.subject", "subject_test.share", "subject_test.decide_after")
        )
    assert bad.value.where == "subject_test.decide_after"


def test_the_winner_is_the_larger_share_of_clickers_then_openers_then_a():
    def fig(name: str, delivered: int, opens: int, clicks: int) -> VariantFigures:
        return VariantFigures(name, name, delivered, delivered, opens, clicks)

    choose = subject_tests.choose
    assert choose(fig("A", 100, 50, 3), fig("B", 100, 10, 4)).winner == 2  # clicks first, whatever the opens
    assert choose(fig("A", 100, 10, 3), fig("B", 50, 40, 2)).winner == 2  # by share: 2 of 50 beats 3 of 100
    tied = choose(fig("A", 100, 30, 2), fig("B", 100, 31, 2))
    assert tied.winner == 2 and tied.reason.startswith("Clicks tied")
    both = choose(fig("A", 100, 30, 2), fig("B", 100, 30, 2))
    assert both.winner == 1 and "A tie on clicks" in both.reason and "A, the issue's own subject" in both.reason
    assert choose(fig("A", 0, 0, 0), fig("B", 0, 0, 0)).winner == 1  # nothing delivered yet: A
    assert "A 3 of 100 (3.0%), B 4 of 100 (4.0%)" in choose(fig("A", 100, 50, 3), fig("B", 100, 10, 4)).reason


def _record(sessions, send_id: int, delivery_id: int, kind, *, position=None, machine=False, at=None) -> None:
    send = TrackedSends(sessions, seconds=0).read(send_id)
    assert send is not None and send.tested
    recorder = EventRecorder(sessions)
    recorder.add(send, delivery_id, kind, machine=machine, position=position, at=at)
    assert recorder.flush() == 1


def test_each_subjects_opens_and_clicks_are_counted_apart_decide_the_test_and_outlive_the_roll_up(sessions):
    with db.transaction(sessions) as s:
        _list(s, "weekly", 40)
        issue_id = _issue(s)
    send_id, _ = _start(sessions, issue_id, SubjectTestPlan("Other", 50, 600))
    with db.transaction(sessions) as s:
        s.execute(
            update(Delivery).where(Delivery.send_id == send_id, Delivery.variant.is_not(None)).values(status="sent")
        )
        rows = s.execute(select(Delivery.id, Delivery.variant).where(Delivery.send_id == send_id)).all()
        positions = list(s.scalars(select(SendLink.position).where(SendLink.send_id == send_id)))
    a = [d for d, v in rows if v == 1]
    b = [d for d, v in rows if v == 2]
    rest = [d for d, v in rows if v is None]
    now = utcnow()
    OPEN, CLICK = EngagementKind.OPEN, EngagementKind.CLICK
    for d in a[:6]:
        _record(sessions, send_id, d, OPEN, at=now)  # A: more openers ...
    for d in b[:3]:
        _record(sessions, send_id, d, OPEN, at=now)
    _record(sessions, send_id, a[0], CLICK, position=positions[0], at=now)  # ... but fewer clickers
    for d in b[:2]:
        _record(sessions, send_id, d, CLICK, position=positions[0], at=now)
    # A scanner clicking two links of A's copy within a second is a machine, not two more clickers of A.
    _record(sessions, send_id, a[1], CLICK, position=positions[0], at=now)
    _record(sessions, send_id, a[1], CLICK, position=positions[1], at=now + timedelta(milliseconds=300))
    _record(sessions, send_id, a[2], CLICK, position=positions[0], machine=True, at=now)  # a HEAD request
    _record(sessions, send_id, rest[0], CLICK, position=positions[0], at=now)  # the rest's readers count for no one
    with sessions() as s:
        assert s.scalar(select(func.count()).where(EngagementEvent.variant.is_(None))) == 1
        report = send_report(s, send_id)
    test = report.subject_test
    assert test is not None and test.state == "testing" and test.winner is None
    a_now, b_now = test.variants
    assert (a_now.variant, a_now.recipients, a_now.delivered, a_now.opens, a_now.clicks) == ("A", 10, 10, 6, 1)
    assert (b_now.variant, b_now.subject, b_now.opens, b_now.clicks) == ("B", "Other", 3, 2)
    assert (a_now.open_rate, b_now.click_rate) == (0.6, 0.2)
    with db.transaction(sessions) as s:
        decided = subject_tests.decide(s, send_id, batch_size=10, now=now + timedelta(minutes=10))
        assert decided is not None and decided.winner == "B"
        assert (
            decided.reason
            == "B won on unique human clicks: A 1 of 10 (10.0%), B 2 of 10 (20.0%) of the copies delivered clicked."
        )
    for d in a[6:9]:
        _record(sessions, send_id, d, CLICK, position=positions[0], at=now + timedelta(minutes=20))
    with sessions() as s:
        after = send_report(s, send_id).subject_test
    assert after is not None and after.winner == "B" and after.decided_by == "scheduler"
    assert [v.clicks for v in after.variants] == [4, 2]  # the figures go on ...
    assert after.decided_on is not None and [v.clicks for v in after.decided_on] == [1, 2]  # ... the decision's stay
    with sessions() as s:
        json = send_report(s, send_id).as_json()["subject_test"]
    assert json["winner"] == "B" and json["variants"][1]["subject"] == "Other"  # type: ignore[index]
    with db.transaction(sessions) as s:
        send = s.get(Send, send_id)
        assert send is not None
        rollup.roll_up(s, send, now + timedelta(days=31))
    with sessions() as s:
        assert s.scalar(select(func.count()).where(EngagementEvent.send_id == send_id)) == 0
        kept = send_report(s, send_id).subject_test
    assert kept is not None and [(v.opens, v.clicks) for v in kept.variants] == [(6, 4), (3, 2)]


def test_the_held_rest_is_no_stalled_work_until_the_test_is_decided(sessions):
    from newsletter.delivery.send_health import send_state

    with db.transaction(sessions) as s:
        _list(s, "weekly", 20)
        issue_id = _issue(s)
    send_id, _ = _start(sessions, issue_id, SubjectTestPlan("Other", 50, 600))
    with sessions() as s:
        send = s.get(Send, send_id)
        assert send is not None
        assert send_state(s, send).waiting  # the test share waits for a worker
    with db.transaction(sessions) as s:
        s.execute(
            update(Delivery).where(Delivery.send_id == send_id, Delivery.variant.is_not(None)).values(status="sent")
        )
    with sessions() as s:
        send = s.get(Send, send_id)
        assert send is not None
        assert not send_state(s, send).waiting  # the rest waits for the decision, not for a worker
        assert sending.send_counts(s, send_id).as_json()["subject_test"]["state"] == "testing"  # type: ignore[index]
    with db.transaction(sessions) as s:
        subject_tests.decide_now(s, send_id, batch_size=10, by="ann")
    with sessions() as s:
        send = s.get(Send, send_id)
        assert send is not None
        assert send_state(s, send).waiting  # released: now it is a worker's work


def test_a_scheduled_send_starts_its_test_with_it_or_is_cancelled_saying_why(sessions):
    from newsletter.delivery import scheduling

    with db.transaction(sessions) as s:
        _list(s, "weekly", 30)
        first, second = _issue(s), _issue(s)
    now = utcnow()
    with db.transaction(sessions) as s:
        planned = scheduling.schedule_send(
            s, first, now + timedelta(hours=1), RENDER, now=now, subject_test=SubjectTestPlan("Other", 20, 900)
        ).id
        doomed = scheduling.schedule_send(
            s, second, now + timedelta(hours=1), RENDER, now=now, subject_test=SubjectTestPlan("Other", 20, 900)
        ).id
    with sessions() as s:
        line = sending.send_counts(s, planned).as_json()["subject_test"]["line"]  # type: ignore[index]
        assert line.startswith("subject test planned: when the send starts, 20 % of its recipients get A or B")
    assert _variants(sessions, planned) == {}  # nobody is chosen before it starts
    at = now + timedelta(hours=1, seconds=1)
    with db.transaction(sessions) as s:
        started = scheduling.start_scheduled(s, planned, RENDER, batch_size=100, now=at)
        assert started is not None and len(started.batches) == 1
    assert sorted(v or 0 for v in _variants(sessions, planned).values()) == [0] * 24 + [1] * 3 + [2] * 3
    with sessions() as s:
        test = s.get(SubjectTest, planned)
        assert test is not None and test.state == SubjectTestState.TESTING
        assert test.decide_at == at + timedelta(minutes=15)  # counted from the start, not from the scheduling
    with db.transaction(sessions) as s:
        from subscribers.lists import update_list

        update_list(s, "weekly", tracking="off")
    with db.transaction(sessions) as s:
        assert scheduling.start_scheduled(s, doomed, RENDER, batch_size=100, now=at) is not None
    with sessions() as s:
        send = s.get(Send, doomed)
        test = s.get(SubjectTest, doomed)
        assert send is not None and test is not None
        assert send.status == SendStatus.CANCELLED and test.state == SubjectTestState.CANCELLED
        assert (send.status_reason or "").startswith("not started: its subject test cannot run: a subject test needs")
        assert "weekly has tracking off" in (send.status_reason or "")
        assert s.scalar(select(func.count()).where(Delivery.send_id == doomed)) == 0


def test_the_status_line_says_where_a_test_stands():
    from datetime import UTC, datetime

    from newsletter.delivery.subject_test_status import SubjectTestStatus as Status

    now = datetime(2026, 12, 7, 12, 5, tzinfo=UTC)
    testing = Status(
        SubjectTestState.TESTING, "A", "B", 20, 7200, now + timedelta(hours=2), None, None, None, None, 1000, 1000, 9000
    )
    assert testing.line(now) == (
        "testing until 14:05 UTC (in 2 h): 1,000 got A and 1,000 got B; then the winning subject goes to 9,000 more"
    )
    late = testing.line(now + timedelta(hours=3))
    assert (
        late.startswith("testing: due to be decided since 14:05 UTC") and "is `newsletter scheduler` running?" in late
    )
    assert "2026-12-07 14:05 UTC" in testing.line(now + timedelta(days=2))  # another day: with its date
    decided = Status(
        SubjectTestState.DECIDED, "A", "B", 20, 7200, now, "B", now, "admin:edna", "B chosen.", 1000, 1000, 9000
    )
    assert decided.line(now) == "decided by admin:edna at 12:05 UTC: B won; it goes to the other 9,000. B chosen."
    assert decided.as_json(now)["winner"] == "B" and decided.as_json(now)["decide_after_seconds"] == 7200
    cancelled = Status(
        SubjectTestState.CANCELLED, "A", "B", 20, 7200, now, None, now, "cli", "cancelled by cli", 10, 10, 80
    )
    assert cancelled.line(now) == "the rest (80) will not get it: cancelled by cli (12:05 UTC)"


def test_a_test_decided_after_its_report_window_closed_is_decided_on_the_figures_kept(sessions):
    with db.transaction(sessions) as s:
        _list(s, "weekly", 20)
        issue_id = _issue(s)
    send_id, _ = _start(sessions, issue_id, SubjectTestPlan("Other", 50, 600))
    with db.transaction(sessions) as s:
        s.execute(
            update(Delivery).where(Delivery.send_id == send_id, Delivery.variant.is_not(None)).values(status="sent")
        )
        b = list(s.scalars(select(Delivery.id).where(Delivery.send_id == send_id, Delivery.variant == 2)))
        position = s.scalar(select(func.min(SendLink.position)).where(SendLink.send_id == send_id))
    _record(sessions, send_id, b[0], EngagementKind.CLICK, position=position, at=utcnow())
    with db.transaction(sessions) as s:
        send = s.get(Send, send_id)
        assert send is not None
        rollup.roll_up(s, send)
    with db.transaction(sessions) as s:
        decided = subject_tests.decide(s, send_id, batch_size=10)
        assert decided is not None and decided.winner == "B" and "B 1 of 5" in decided.reason
