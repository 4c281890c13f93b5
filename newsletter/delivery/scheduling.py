"""Scheduled sends and weekly slots: what goes out when, started at most once.

A scheduled send is a Send row with status "scheduled" and a ``scheduled_at`` time. The
issue is rendered when it is scheduled (so a broken issue is refused at once) and again
when it starts (so corrections made in between go out); the recipients are taken when
it starts. Starting is one transaction that first re-reads the row as still "scheduled"
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers), so any number of
schedulers may try the same send and only one starts it.

A list may have a weekly slot (weekday, time, time zone): an issue marked ready is
scheduled for the list's next free slot by :func:`plan_ready_issues`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.content.issues import RenderSettings, get_issue
from newsletter.delivery import subject_variants
from newsletter.delivery.audience import (
    Repeat,
    check_send,
    choose_target,
    record_target,
    target_count,
    target_of_send,
    target_refusal,
)
from newsletter.delivery.sending import Batch, compile_message, get_send, snapshot_recipients
from newsletter.errors import Conflict, InvalidInput, NewsletterError
from newsletter.store.models import Issue, MailingList, Send, SendList, utcnow
from newsletter.store.states import IssueStatus, SendAudience, SendStatus
from subscribers.lists import get_list

#: A send starting later than this after its time says so in its status reason.
LATE_AFTER = timedelta(seconds=60)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Started:
    send_id: int
    batches: list[Batch]
    late_by: timedelta | None


def parse_time(value: str, *, where: str = "--at") -> datetime:
    """An ISO 8601 time with its UTC offset, e.g. 2026-12-07T08:00+01:00. Raises InvalidInput."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 time: {value!r}; use e.g. 2026-12-07T08:00+01:00", where=where) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{value!r} has no UTC offset; add one, e.g. {value}+01:00 or {value}Z", where=where)
    return parsed.astimezone(UTC)


def _check_future(at: datetime, now: datetime, where: str) -> datetime:
    if at.tzinfo is None:
        raise InvalidInput("the time needs a UTC offset", where=where)
    at = at.astimezone(UTC)
    if at <= now:
        raise InvalidInput(
            f"{at.isoformat(timespec='seconds')} is in the past; send now instead, or pick a later time", where=where
        )
    return at


def schedule_send(
    session: Session,
    issue_id: int,
    at: datetime,
    settings: RenderSettings,
    *,
    list_slug: str | None = None,
    list_slugs: Sequence[str] = (),
    segment: str | None = None,
    now: datetime | None = None,
    repeat: Repeat = Repeat.NO,
    require_recipients: bool = True,
    subject_test: subject_variants.SubjectTestPlan | None = None,
) -> Send:
    """Store a send of the issue that starts at ``at``.

    Refused like a send that starts now (see :func:`newsletter.delivery.audience.check_send`): a list
    that already has a send of the issue (a scheduled one included) needs ``repeat``, and a
    send that would reach no one now is refused unless ``require_recipients`` is False. Several
    lists (``list_slugs``) and a segment are chosen as :func:`newsletter.delivery.sending.start_send`
    does; the segment's filter is frozen on the send now. ``subject_test`` is planned with it and starts when
    it starts. Raises NotFound, InvalidInput, RenderError, SendRefused, SegmentError, Conflict (the same issue
    already scheduled for the list), UntrackedLists (a subject test to a list that counts no clicks).
    """
    now = now or utcnow()
    at = _check_future(at, now, "at")
    issue, issue_list = get_issue(session, issue_id)
    target = choose_target(session, issue_list, list_slugs or ([list_slug] if list_slug else []), segment)
    mailing_list = target.primary
    already = session.scalar(
        select(Send.id).where(
            Send.issue_id == issue.id, Send.list_id == mailing_list.id, Send.status == SendStatus.SCHEDULED
        )
    )
    if already is not None:
        raise Conflict(
            f"issue {issue.id} is already scheduled for {mailing_list.slug} (send {already}); reschedule or cancel that one"
        )
    if subject_test is not None:
        subject_variants.refuse_untracked(target.lists)
    audience = check_send(session, issue.id, target, repeat, require_recipients=require_recipients)
    rendered = settings.render(issue, mailing_list, target.lists[1:])
    if subject_test is not None and subject_test.subject_b == rendered.subject:
        raise InvalidInput(
            f"the other subject is the issue's own ({rendered.subject!r}): nothing to test", where="--subject-test"
        )
    send = Send(
        issue_id=issue.id,
        list_id=mailing_list.id,
        status=SendStatus.SCHEDULED,
        audience=audience,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        scheduled_at=at,
        created_at=now,
    )
    session.add(send)
    session.flush()
    record_target(session, send, target)
    if subject_test is not None:
        subject_variants.store_plan(session, send, subject_test)
    compile_message(session, send)  # unsafe header values are refused now, not at send time
    return send


def reschedule_send(session: Session, send_id: int, at: datetime, *, now: datetime | None = None) -> Send:
    """Move a scheduled send. Raises NotFound, InvalidInput (past time), Conflict (already started)."""
    now = now or utcnow()
    send = get_send(session, send_id)
    if send.status != SendStatus.SCHEDULED:
        raise Conflict(f"send {send_id} is {send.status}; only a scheduled send can be rescheduled")
    send.scheduled_at = _check_future(at, now, "at")
    return send


def scheduled_sends(session: Session) -> list[tuple[Send, MailingList]]:
    rows = session.execute(
        select(Send, MailingList)
        .join(MailingList, MailingList.id == Send.list_id)
        .where(Send.status == SendStatus.SCHEDULED)
        .order_by(Send.scheduled_at, Send.id)
    ).all()
    return [(send, mailing_list) for send, mailing_list in rows]


def due_send_ids(session: Session, now: datetime | None = None) -> list[int]:
    now = now or utcnow()
    return list(
        session.scalars(
            select(Send.id)
            .where(Send.status == SendStatus.SCHEDULED, Send.scheduled_at <= now)
            .order_by(Send.scheduled_at, Send.id)
        )
    )


def start_scheduled(
    session: Session, send_id: int, settings: RenderSettings, *, batch_size: int, now: datetime | None = None
) -> Started | None:
    """Start a due scheduled send: render the issue afresh, snapshot the recipients.

    Returns None when the send is not (or no longer) scheduled and due, e.g. because another
    scheduler started it first. An issue that no longer renders cancels the send, saying
    why: no email leaves for a send that cannot be rendered. So does a send that would reach
    no one now, saying why from the list's counts.
    """
    now = now or utcnow()
    send = session.scalar(
        select(Send)
        .where(Send.id == send_id, Send.status == SendStatus.SCHEDULED, Send.scheduled_at <= now)
        .with_for_update(skip_locked=True)
    )
    if send is None:
        return None
    issue = session.get(Issue, send.issue_id)
    mailing_list = session.get(MailingList, send.list_id)
    assert issue is not None and mailing_list is not None
    others = session.scalars(
        select(MailingList).join(SendList, SendList.list_id == MailingList.id).where(SendList.send_id == send.id)
    ).all()
    try:
        rendered = settings.render(issue, mailing_list, sorted(others, key=lambda m: m.id))
        send.subject, send.html, send.text = rendered.subject, rendered.html, rendered.text
        compile_message(session, send)
    except NewsletterError as exc:
        send.status, send.finished_at = SendStatus.CANCELLED, now
        send.status_reason = f"not started: the issue no longer renders: {exc}"
        return Started(send.id, [], None)
    audience = SendAudience(send.audience or SendAudience.ALL)
    try:
        target = target_of_send(session, send)
    except InvalidInput as exc:  # its frozen segment filter no longer fits the list
        send.status, send.finished_at = SendStatus.CANCELLED, now
        send.status_reason = f"not started: the segment's filter no longer applies: {exc}"
        return Started(send.id, [], None)
    count = target_count(session, target, issue.id, audience)
    if not count:
        # Not sent, and cancelled so that it blocks no later send: nothing was mailed.
        refusal = target_refusal(session, target, issue.id, audience)
        send.status, send.finished_at = SendStatus.CANCELLED, now
        send.status_reason = f"not sent: {refusal}"
        return Started(send.id, [], None)
    test = subject_variants.planned(session, send.id)
    if test is not None:
        try:  # a list's tracking turned off, or too few recipients left, since it was scheduled
            subject_variants.refuse_untracked(target.lists)
            subject_variants.refuse_too_small(count, test.share)
        except (Conflict, InvalidInput) as exc:
            send.status, send.finished_at = SendStatus.CANCELLED, now
            send.status_reason = f"not started: its subject test cannot run: {exc}"
            subject_variants.cancel_with_send(session, send.id, now)
            return Started(send.id, [], None)
    assert send.scheduled_at is not None
    late = now - send.scheduled_at
    send.status, send.started_at = SendStatus.SENDING, now
    if late > LATE_AFTER:
        send.status_reason = (
            f"started {_duration(late)} late (scheduled for {send.scheduled_at.isoformat(timespec='seconds')})"
        )
    issue.status = IssueStatus.SENT
    batches = snapshot_recipients(session, send, target, now, batch_size)
    return Started(send.id, batches, late if late > LATE_AFTER else None)


# --- weekly slots ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WeeklySlot:
    weekday: int  # 0 = Monday
    time: str  # "HH:MM"
    timezone: str

    def describe(self) -> str:
        return f"{WEEKDAYS[self.weekday].capitalize()}s at {self.time} ({self.timezone})"

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (aware), in UTC; correct across DST changes."""
        zone = ZoneInfo(self.timezone)
        hour, minute = (int(x) for x in self.time.split(":"))
        local = moment.astimezone(zone)
        day = local.date() + timedelta(days=(self.weekday - local.weekday()) % 7)
        while True:
            candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
            if candidate > moment:
                return candidate
            day += timedelta(days=7)


def parse_slot(weekday: str, time: str, timezone: str) -> WeeklySlot:
    """Raises InvalidInput naming the bad part."""
    day = weekday.strip().lower()
    matches = [i for i, name in enumerate(WEEKDAYS) if name.startswith(day)] if len(day) >= 2 else []
    if len(matches) != 1:
        raise InvalidInput(f"unknown weekday {weekday!r}; use monday ... sunday", where="weekday")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", time.strip()):
        raise InvalidInput(f"expected a 24-hour time like 08:00, got {time!r}", where="time")
    try:
        ZoneInfo(timezone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris", where="timezone"
        ) from None
    return WeeklySlot(matches[0], time.strip(), timezone.strip())


def slot_of(mailing_list: MailingList) -> WeeklySlot | None:
    if mailing_list.slot_weekday is None or not mailing_list.slot_time or not mailing_list.slot_timezone:
        return None
    return WeeklySlot(mailing_list.slot_weekday, mailing_list.slot_time, mailing_list.slot_timezone)


def set_weekly_slot(session: Session, list_slug: str, slot: WeeklySlot | None) -> MailingList:
    mailing_list = get_list(session, list_slug)
    mailing_list.slot_weekday = slot.weekday if slot else None
    mailing_list.slot_time = slot.time if slot else None
    mailing_list.slot_timezone = slot.timezone if slot else None
    return mailing_list


def mark_ready(session: Session, issue_id: int, settings: RenderSettings) -> Issue:
    """Mark a draft ready to go out in its list's next weekly slot. Raises NotFound, Conflict, RenderError."""
    issue, mailing_list = get_issue(session, issue_id)
    if issue.status == IssueStatus.SENT:
        raise Conflict(f"issue {issue_id} has been sent already")
    if slot_of(mailing_list) is None:
        raise Conflict(
            f"list {mailing_list.slug} has no weekly slot; set one (`newsletter lists slot {mailing_list.slug} ...`) "
            "or schedule the send yourself (`newsletter send ID --at ...`)"
        )
    settings.render(issue, mailing_list)  # refuse a broken issue now, not at its slot
    issue.status = IssueStatus.READY
    return issue


@dataclass
class Plan:
    scheduled: list[Send]
    problems: list[str]  # ready issues sent back to draft, and why


def plan_ready_issues(session: Session, settings: RenderSettings, *, now: datetime | None = None) -> Plan:
    """Schedule every ready issue with no send yet into its list's next free weekly slot (one issue per slot).

    A ready issue that no longer renders goes back to draft, and the plan says why.
    """
    now = now or utcnow()
    plan = Plan([], [])
    ready = session.execute(
        select(Issue, MailingList)
        .join(MailingList, MailingList.id == Issue.list_id)
        .where(Issue.status == IssueStatus.READY, MailingList.slot_weekday.is_not(None))
        .order_by(Issue.updated_at, Issue.id)
    ).all()
    for issue, mailing_list in ready:
        has_send = session.scalar(select(Send.id).where(Send.issue_id == issue.id, Send.status != SendStatus.CANCELLED))
        slot = slot_of(mailing_list)
        if has_send is not None or slot is None:
            continue
        taken = session.scalar(
            select(Send.scheduled_at)
            .where(Send.list_id == mailing_list.id, Send.status == SendStatus.SCHEDULED)
            .order_by(Send.scheduled_at.desc())
            .limit(1)
        )
        at = slot.next_after(max(now, taken) if taken else now)
        try:
            with session.begin_nested():
                plan.scheduled.append(schedule_send(session, issue.id, at, settings, now=now, require_recipients=False))
        except NewsletterError as exc:
            issue.status = IssueStatus.DRAFT  # back to the editor
            plan.problems.append(f"issue {issue.id} was ready but cannot be scheduled, back to draft: {exc}")
    return plan


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"
