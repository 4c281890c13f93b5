"""Scheduled sends and weekly slots: on time, never early, exactly once with two schedulers."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.content.issue_files import read_issue_file
from newsletter.content.issues import RenderSettings, create_issue
from newsletter.delivery import scheduling
from newsletter.errors import Conflict, InvalidInput
from newsletter.store.models import Delivery, Send, utcnow
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from tests.sendkit import SAMPLE_ISSUE, Newsroom

SETTINGS = RenderSettings.create(base_url="https://news.example.org", postal_address="1 Street", user_template_dir=None)


def _setup(session, subscribers: int = 3) -> int:
    create_list(session, "weekly", name="Weekly", from_email="news@example.org")
    for i in range(subscribers):
        add_subscriber(session, "weekly", f"r{i}@example.com", confirmed=True)
    issue, _ = create_issue(session, "weekly", read_issue_file(SAMPLE_ISSUE), SETTINGS)
    return issue.id


def test_times_must_carry_an_offset_and_lie_ahead(sessions):
    assert scheduling.parse_time("2026-12-07T08:00+01:00") == datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="no UTC offset"):
        scheduling.parse_time("2026-12-07T08:00")
    with pytest.raises(InvalidInput, match="not an ISO 8601"):
        scheduling.parse_time("next monday")
    with sessions() as session, session.begin():
        issue_id = _setup(session)
        with pytest.raises(InvalidInput, match="in the past"):
            scheduling.schedule_send(session, issue_id, utcnow() - timedelta(minutes=1), SETTINGS)


def test_schedule_reschedule_and_start_once(sessions):
    now = utcnow()
    with sessions() as session, session.begin():
        issue_id = _setup(session)
        send = scheduling.schedule_send(session, issue_id, now + timedelta(hours=1), SETTINGS, now=now)
        send_id = send.id
        assert send.status == "scheduled" and send.total == 0
        with pytest.raises(Conflict, match="already scheduled"):
            scheduling.schedule_send(session, issue_id, now + timedelta(hours=2), SETTINGS, now=now)
        scheduling.reschedule_send(session, send_id, now + timedelta(hours=3), now=now)
    with sessions() as session, session.begin():
        assert scheduling.due_send_ids(session, now + timedelta(hours=2)) == []
        assert (
            scheduling.start_scheduled(session, send_id, SETTINGS, batch_size=2, now=now + timedelta(hours=2)) is None
        )
    at = now + timedelta(hours=3)
    with sessions() as session, session.begin():
        assert scheduling.due_send_ids(session, at) == [send_id]
        started = scheduling.start_scheduled(session, send_id, SETTINGS, batch_size=2, now=at)
        assert started is not None and started.late_by is None and len(started.batches) == 2
    with sessions() as session, session.begin():
        # A second scheduler that read the send as due before the first committed gets nothing.
        assert scheduling.start_scheduled(session, send_id, SETTINGS, batch_size=2, now=at) is None
        send = session.get(Send, send_id)
        assert send.status == "sending" and send.total == 3 and send.status_reason is None
        assert session.query(Delivery).filter_by(send_id=send_id).count() == 3
        with pytest.raises(Conflict, match="only a scheduled send"):
            scheduling.reschedule_send(session, send_id, at + timedelta(days=1), now=at)


def test_a_send_started_after_its_time_says_it_was_late(sessions):
    now = utcnow()
    with sessions() as session, session.begin():
        send_id = scheduling.schedule_send(session, _setup(session), now + timedelta(minutes=5), SETTINGS, now=now).id
    later = now + timedelta(hours=2, minutes=5)  # everything was down for two hours
    with sessions() as session, session.begin():
        started = scheduling.start_scheduled(session, send_id, SETTINGS, batch_size=10, now=later)
        assert started is not None and started.late_by == timedelta(hours=2)
        assert session.get(Send, send_id).status_reason.startswith("started 2 h 0 min late (scheduled for ")


def test_weekly_slot_next_time_follows_the_local_clock_across_dst():
    slot = scheduling.parse_slot("Mon", "08:00", "Europe/Paris")
    # Before the clocks change (CET, UTC+1) and after (CEST, UTC+2): always 08:00 in Paris.
    assert slot.next_after(datetime(2027, 3, 20, tzinfo=UTC)) == datetime(2027, 3, 22, 7, 0, tzinfo=UTC)
    assert slot.next_after(datetime(2027, 3, 29, 6, 59, tzinfo=UTC)) == datetime(
        2027, 3, 29, 6, 0, tzinfo=UTC
    ) + timedelta(days=7)
    assert slot.next_after(datetime(2027, 3, 29, 5, 59, tzinfo=UTC)) == datetime(2027, 3, 29, 6, 0, tzinfo=UTC)
    for bad, where in (
        (("Funday", "08:00", "UTC"), "weekday"),
        (("mon", "8am", "UTC"), "time"),
        (("mon", "08:00", "Mars/Olympus"), "timezone"),
    ):
        with pytest.raises(InvalidInput) as caught:
            scheduling.parse_slot(*bad)
        assert caught.value.where == where


def test_ready_issues_fill_the_lists_next_free_slots(sessions):
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
    with sessions() as session, session.begin():
        first = _setup(session)
        second, _ = create_issue(session, "weekly", read_issue_file(SAMPLE_ISSUE), SETTINGS)
        with pytest.raises(Conflict, match="no weekly slot"):
            scheduling.mark_ready(session, first, SETTINGS)
        scheduling.set_weekly_slot(session, "weekly", scheduling.parse_slot("monday", "08:00", "Europe/Paris"))
        scheduling.mark_ready(session, first, SETTINGS)
        scheduling.mark_ready(session, second.id, SETTINGS)
        plan = scheduling.plan_ready_issues(session, SETTINGS, now=now)
        assert [s.scheduled_at for s in plan.scheduled] == [
            datetime(2026, 11, 30, 7, 0, tzinfo=UTC),
            datetime(2026, 12, 7, 7, 0, tzinfo=UTC),
        ]
        assert plan.problems == []
        assert scheduling.plan_ready_issues(session, SETTINGS, now=now).scheduled == []  # planned once


def _scheduler(room: Newsroom, n: int) -> subprocess.Popen:
    log = open(room.tmp / f"scheduler-{n}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "scheduler"],
        env=room.cli.env,
        cwd=room.cli.cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.redis
@pytest.mark.slow
def test_a_scheduled_send_goes_out_on_time_exactly_once_with_two_schedulers(newsroom: Newsroom):
    room = newsroom
    addresses = room.setup_list(40)
    issue_id = room.create_issue()
    room.start_worker()
    schedulers = [_scheduler(room, 1), _scheduler(room, 2)]
    try:
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
        send_id = room.send(issue_id, "--at", at.isoformat())
        # Not before its time: poll until a second before it. A reading counts only if it was
        # over before the send's time (a CLI call can take several seconds on a busy machine).
        checked = 0
        first = room.status(send_id)["status"]
        if datetime.now(UTC) < at:
            assert first == "scheduled"
            checked += 1
        while datetime.now(UTC) < at - timedelta(seconds=1):
            status = room.status(send_id)["status"]
            nothing_sent = room.capture.messages == []
            if datetime.now(UTC) < at:
                assert status == "scheduled" and nothing_sent
                checked += 1
            time.sleep(0.5)
        assert checked >= 1
        final = room.wait_status(send_id, timeout=60)
        assert final["sent"] == 40 and final["total"] == 40
        started = datetime.fromisoformat(final["started_at"])
        assert at <= started <= at + timedelta(seconds=10)
        room.wait_received(40)
        time.sleep(2)  # room for a duplicate to show up, if there were one
        assert room.received() == {a: 1 for a in addresses}
        listed = room.cli("sends", "ls").stdout
        assert listed.count("\n") >= 1 and "finished" in listed
    finally:
        for proc in schedulers:
            proc.terminate()
            proc.wait(15)
    logs = "".join((room.tmp / f"scheduler-{n}.log").read_text() for n in (1, 2))
    assert "beat: Starting" in logs


def test_cli_schedule_list_reschedule_cancel(cli, tmp_path: Path):
    cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    cli("subscribers", "add", "weekly", "ann@example.com", "--confirmed")  # a send to no one is refused
    issue_id = cli("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout.strip().splitlines()[-1]
    bad = cli("send", issue_id, "--at", "2026-13-01T08:00Z", check=False)
    assert bad.returncode == 1 and "--at: not an ISO 8601 time" in bad.stderr
    at = (datetime.now(UTC) + timedelta(days=3)).replace(second=0, microsecond=0)
    send_id = cli("send", issue_id, "--at", at.isoformat()).stdout.strip().splitlines()[-1]
    assert f"{at:%Y-%m-%d %H:%M}" in cli("sends", "scheduled").stdout
    later = at + timedelta(days=1)
    cli("sends", "reschedule", send_id, "--at", later.isoformat())
    assert f"{later:%Y-%m-%d %H:%M}" in cli("sends", "scheduled").stdout
    cli("sends", "cancel", send_id)
    assert "No scheduled sends" in cli("sends", "scheduled").stdout
    slot = cli("lists", "slot", "weekly", "--weekday", "friday", "--time", "09:30", "--timezone", "America/New_York")
    assert "Fridays at 09:30 (America/New_York)" in slot.stdout
    assert "next slot" in slot.stdout
    assert "goes out in weekly's next slot" in cli("issues", "ready", issue_id).stdout


def test_a_due_send_that_cannot_start_holds_back_no_other(tmp_path, redis_url, monkeypatch):
    """The scheduler's tick starts each due send on its own: one that raises (a bug, a row it cannot read)
    is logged and tried again next tick, and the others start on time."""
    import os

    from newsletter.config import Settings
    from newsletter.runtime import Runtime
    from newsletter.store import db
    from newsletter.worker import scheduler_tasks
    from newsletter.worker.app import WorkerState

    settings = Settings.from_environ(
        {
            "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
            "NEWSLETTER_BROKER_URL": redis_url,
            "NEWSLETTER_SECRET_KEY": "scheduler-test-secret-key-0123456789",
        }
    )
    runtime = Runtime(settings)
    db.upgrade(runtime.engine)
    now = utcnow()
    with runtime.sessions() as session, session.begin():
        first = _setup(session)
        create_list(session, "monthly", name="Monthly", from_email="news@example.org")
        add_subscriber(session, "monthly", "m@example.com", confirmed=True)  # gone by the time it is due:
        second, _ = create_issue(session, "monthly", read_issue_file(SAMPLE_ISSUE), SETTINGS)
        broken = scheduling.schedule_send(session, first, now + timedelta(minutes=1), SETTINGS, now=now).id
        fine = scheduling.schedule_send(session, second.id, now + timedelta(minutes=1), SETTINGS, now=now).id
    with runtime.sessions() as session, session.begin():
        from sqlalchemy import select

        from newsletter.store.models import Subscriber
        from subscribers.directory import delete_subscriber

        gone = session.scalar(select(Subscriber.id).where(Subscriber.email == "m@example.com"))
        assert gone is not None
        delete_subscriber(session, gone)  # (so nothing is queued here)
    real = scheduling.start_scheduled

    def start_or_fail(session, send_id, *args, **kwargs):
        if send_id == broken:
            raise RecursionError("maximum recursion depth exceeded")
        return real(session, send_id, *args, **kwargs)

    monkeypatch.setattr(scheduling, "start_scheduled", start_or_fail)
    scheduler_tasks.run_tick(WorkerState(runtime, os.getpid()), now=now + timedelta(minutes=2))
    with runtime.sessions() as session:
        after, held = session.get(Send, fine), session.get(Send, broken)
        assert after is not None and held is not None
        assert after.status == "cancelled" and "0 confirmed subscribers" in (after.status_reason or "")  # taken up
        assert held.status == "scheduled"  # tried again at the next tick
    runtime.engine.dispose()
