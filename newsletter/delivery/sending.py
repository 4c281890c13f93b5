"""Sends: start one (render once, freeze, snapshot the recipients), steer it, read its log.

Starting a send is one transaction: the issue is rendered and its message compiled (so a
send that cannot be rendered, or whose headers are unsafe, stores nothing and mails no
one), the rendered HTML and text are frozen on the send, and one set-based statement
writes a delivery row for every confirmed, unsuppressed subscriber. The caller enqueues
the returned batches after the commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from newsletter.content.issues import Links, RenderSettings, get_issue
from newsletter.delivery import send_status, subject_test_status, subject_variants
from newsletter.delivery.audience import (
    Repeat,
    Target,
    check_send,
    choose_target,
    mailed,
    record_target,
    target_refusal,
)
from newsletter.delivery.ports import Claimed
from newsletter.delivery.recipient_store import held_by_a_live_claim
from newsletter.engagement import links as tracked_links
from newsletter.errors import Conflict, InvalidInput
from newsletter.mail.messages import CompiledMessage, MessageHeaders, Recipient
from newsletter.store import erasure_lock
from newsletter.store.db import id_ranges, rowcount
from newsletter.store.models import (
    BatchClaim,
    Delivery,
    MailingList,
    Send,
    Subscriber,
    Subscription,
    utcnow,
)
from newsletter.store.states import DeliveryStatus, IssueStatus, SendAudience, SendStatus, Tracking
from subscribers.tokens import TokenSigner

Batch = tuple[int, int]  # first and last delivery id, inclusive


@dataclass(frozen=True)
class SendCounts:
    send: Send
    list_slug: str
    counts: dict[str, int]
    test: subject_test_status.SubjectTestStatus | None = None  # its subject test, if it has one

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        return self.counts.get(DeliveryStatus.PENDING, 0)

    def as_json(self) -> dict[str, object]:
        return send_status.status_json(self.send, self.list_slug, self.counts, self.test)


def send_key(send: Send) -> str:
    """Names a send for good, across databases: its id and its creation time."""
    return send_status.send_key(send)


def message_headers(
    mailing_list: MailingList, *, subject: str, message_id_tag: str, feedback_id: str | None = None
) -> MessageHeaders:
    return MessageHeaders(
        subject=subject,
        from_email=mailing_list.from_email,
        from_name=mailing_list.from_name or mailing_list.name,
        reply_to=mailing_list.reply_to,
        list_name=mailing_list.name,
        list_slug=mailing_list.slug,
        private=bool(mailing_list.private),
        message_id_tag=message_id_tag,
        feedback_id=feedback_id,
    )


def compile_message(
    session: Session, send: Send, *, message_id_key: bytes | None = None, tracking_base_url: str | None = None
) -> CompiledMessage:
    """The send's frozen issue as a pre-encoded message. Raises InvalidInput for unsafe header values.

    Workers pass ``message_id_key`` (``TokenSigner.derived_key("message-id")``), so no
    recipient can derive another's Message-ID from their own, and ``tracking_base_url``: a
    tracked send's links then point to its redirects, and its image is added
    (:mod:`newsletter.engagement.links`); the stored issue keeps the real links.
    """
    mailing_list = session.get(MailingList, send.list_id)
    assert mailing_list is not None
    html, text = send.html, send.text
    if tracking_base_url is not None and send.tracking != Tracking.OFF:
        urls = tracked_links.link_urls(session, send.id)
        html, text = tracked_links.track(html, text, tracking_base_url, send.id, urls)
    return CompiledMessage(
        message_headers(
            mailing_list,
            subject=send.subject,
            message_id_tag=send_key(send),
            feedback_id=f"{send.id}:{mailing_list.slug}:newsletter",
        ),
        html,
        text,
        message_id_key=message_id_key,
    )


class RecipientLinks:
    """Builds each recipient's signed links: a few HMACs and string joins."""

    def __init__(self, signer: TokenSigner, links: Links) -> None:
        self.signer = signer
        self.links = links
        self._view_online: dict[tuple[str, int, int, bool], str] = {}

    def __call__(self, message: CompiledMessage, send: Send, row: Claimed) -> Recipient:
        return self.recipient(message, send.list_id, send.issue_id, row)

    def recipient(
        self, message: CompiledMessage, list_id: int, issue_id: int, row: Claimed, *, tracked_send: int | None = None
    ) -> Recipient:
        """``list_id``: the send's own list, whose archive the view-online link points to; the unsubscribe and
        preferences links are for the row's list when it has one (a send to several lists), else for it.
        ``tracked_send``: the id of a tracked send, whose copies carry a tracking token."""
        own = row.list_id or list_id
        unsubscribe = self.signer.make(row.subscriber_id, own, "unsubscribe")
        return Recipient(
            delivery_id=row.delivery_id,
            email=row.email,
            name=row.name,
            unsubscribe_url=self.links.unsubscribe(unsubscribe),
            preferences_url=self.links.preferences(self.signer.make(row.subscriber_id, own, "preferences")),
            unsubscribe_mailto=f"mailto:unsubscribe+{unsubscribe}@{message.domain}?subject=unsubscribe",
            view_online_url=self._view_online_url(
                message.headers.list_slug, list_id, issue_id, message.headers.private
            ),
            tracking=self.signer.tracking_token(tracked_send, row.delivery_id) if tracked_send is not None else "",
        )

    def _view_online_url(self, list_slug: str, list_id: int, issue_id: int, private: bool) -> str:
        """The issue's archive link: the same for every recipient, so made once (a private list's costs an HMAC)."""
        key = (list_slug, list_id, issue_id, private)
        url = self._view_online.get(key)
        if url is None:
            if len(self._view_online) > 64:
                self._view_online.clear()
            archive_key = self.signer.archive_key(list_id, issue_id) if private else None
            url = self._view_online[key] = self.links.view_online(list_slug, issue_id, archive_key)
        return url


def start_send(
    session: Session,
    issue_id: int,
    settings: RenderSettings,
    *,
    list_slug: str | None = None,
    list_slugs: Sequence[str] = (),
    segment: str | None = None,
    batch_size: int,
    repeat: Repeat = Repeat.NO,
    subject_test: subject_variants.SubjectTestPlan | None = None,
) -> tuple[Send, list[Batch]]:
    """Create a send of the issue to its list (or ``list_slug``, or the lists ``list_slugs``: each address
    once, the first list the send's own) and snapshot its recipients; ``segment``: only the saved segment
    of that name of the (one) list.

    ``repeat`` says what to do when a list already has a send of the issue (see
    :mod:`newsletter.delivery.audience`). ``subject_test``: a share of the recipients gets the issue's subject
    or another one, and only their batches are returned; the rest waits for the winner
    (:mod:`newsletter.delivery.subject_variants`). Raises NotFound, SendRefused (a second send not asked for,
    or no one to mail: nothing is stored), RenderError (the issue cannot be rendered),
    InvalidInput (unsafe header values, a segment with several lists, a test share too small),
    SegmentError, UntrackedLists (a subject test to a list that counts no clicks). Returns the
    send and the delivery-id ranges to enqueue once committed.
    """
    issue, issue_list = get_issue(session, issue_id)
    target = choose_target(session, issue_list, list_slugs or ([list_slug] if list_slug else []), segment)
    mailing_list = target.primary
    if subject_test is not None:
        subject_variants.refuse_untracked(target.lists)
    audience = check_send(session, issue.id, target, repeat)
    # The render (Python's work) runs beside the snapshot (the database's): at 100,000 recipients on
    # PostgreSQL the INSERT takes 0.4 s and the render 0.2 s of it. The send row is written first with
    # the issue's subject, then given the rendered edition; a render that fails rolls the whole
    # transaction back, the snapshot with it, so still nothing is stored and no one mailed.
    rendered_issue = settings.render_beside(issue, mailing_list, target.lists[1:])
    now = utcnow()
    send = Send(
        issue_id=issue.id,
        list_id=mailing_list.id,
        status=SendStatus.SENDING,
        audience=audience,
        subject=issue.subject,
        html="",
        text="",
        started_at=now,
        created_at=now,
    )
    session.add(send)
    session.flush()
    record_target(session, send, target)
    if subject_test is not None:
        subject_variants.store_plan(session, send, subject_test)
    batches = _snapshot(session, send, target, now, batch_size)
    rendered = rendered_issue()  # RenderError
    if subject_test is not None and subject_test.subject_b == rendered.subject:
        raise InvalidInput(
            f"the other subject is the issue's own ({rendered.subject!r}): nothing to test", where="--subject-test"
        )
    send.subject, send.html, send.text = rendered.subject, rendered.html, rendered.text
    compile_message(session, send)  # refuses unsafe header values now, before anything is queued
    tracked_links.freeze(session, send, target.list_ids)  # numbers the rendered edition's links
    issue.status = IssueStatus.SENT
    return send, batches


def snapshot_recipients(
    session: Session, send: Send, target: Target | int, now: datetime, batch_size: int
) -> list[Batch]:
    """Write a pending delivery for everyone the send mails (see :func:`newsletter.delivery.audience.mailed`);
    return the batches. ``target``: the send's lists and segment (a list id: that list alone).

    One INSERT ... SELECT whatever the lists. For a send to several lists it groups the subscriptions
    by subscriber (one row each) and keeps the lowest of their list ids on the row, whose unsubscribe
    link the copy carries; a send to one list writes no list id (its rows stay as narrow as before).
    A send with no one to mail (everyone left between the check and now) is finished at once,
    saying why. A send with a planned subject test ranks its rows and gives each of the test share its
    variant (:func:`newsletter.delivery.subject_variants.ranked`); only the test share's batches are
    returned.
    """
    session.flush()  # the send has its id
    tracked_links.freeze(session, send, (target,) if isinstance(target, int) else target.list_ids)
    return _snapshot(session, send, target, now, batch_size)


def _snapshot(session: Session, send: Send, target: Target | int, now: datetime, batch_size: int) -> list[Batch]:
    """:func:`snapshot_recipients` but for the tracking: the delivery rows and the batches."""
    if isinstance(target, int):
        list_ids: tuple[int, ...] = (target,)
        several, segment = False, None
    else:
        list_ids, several, segment = target.list_ids, target.several, target.condition
    audience = SendAudience(send.audience or SendAudience.ALL)
    session.flush()  # the send has its id
    test = subject_variants.planned(session, send.id)
    names = ["send_id", "subscriber_id", "email", "status", "attempts", "updated_at"]
    columns = [
        literal(send.id),
        Subscriber.id,
        Subscriber.email,
        literal(DeliveryStatus.PENDING, Delivery.status.type),
        literal(0),
        literal(now, Delivery.updated_at.type),
    ]
    recipients = (
        select(*columns, *([func.min(Subscription.list_id)] if several else []))
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(*mailed(list_ids, send.issue_id, audience, segment))
        .order_by(Subscriber.id)
    )
    if several:
        recipients = recipients.group_by(Subscriber.id, Subscriber.email)
        names.append("list_id")
    if test is not None:  # each row its variant (the rest none), written in the ranking's order
        labelled = recipients.with_only_columns(
            *(c.label(n) for c, n in zip(recipients.selected_columns, names, strict=True)), maintain_column_froms=True
        )
        recipients = subject_variants.ranked(labelled, names, Subscriber.id, test)
        names.append("variant")
    erasure_lock.hold_for_snapshot(session)  # stands in for the foreign keys deliveries do not have
    session.execute(
        insert(Delivery).from_select(names, recipients),
        execution_options={"synchronize_session": False},
    )
    # Counted, not taken from rowcount (SQLAlchemy reports -1 for INSERT ... SELECT on PostgreSQL); the
    # same pass finds the ids' first and last, to cut the batches without numbering every row.
    total, first_id, last_id = session.execute(
        select(func.count(), func.min(Delivery.id), func.max(Delivery.id)).where(Delivery.send_id == send.id)
    ).one()
    send.total = total
    if session.get_bind().dialect.name == "postgresql":
        # A list just imported (or restored) may have no statistics yet: the planner then guesses one
        # subscription per list and probes each recipient's by scanning all of the list's (every batch's
        # claim and check take seconds instead of a millisecond, until autovacuum gets to it, a minute or
        # more later). Sampling the table costs a fraction of a second, even at a million rows.
        session.connection().exec_driver_sql("ANALYZE subscriptions")
    if send.total == 0:
        if isinstance(target, int):
            target = Target(tuple(session.scalars(select(MailingList).where(MailingList.id == target))))
        send.status, send.finished_at = SendStatus.FINISHED, now
        send.status_reason = "no one to mail: " + target_refusal(session, target, send.issue_id, audience).summary
        return []
    if test is not None:
        subject_variants.begin(session, send, test, now)
        return subject_variants.test_batches(session, send.id, batch_size)
    if last_id - first_id + 1 != total:  # another send's snapshot took ids in between
        return pending_batches(session, send.id, batch_size)
    return [(start, min(start + batch_size - 1, last_id)) for start in range(first_id, last_id + 1, batch_size)]


def pending_batches(session: Session, send_id: int, batch_size: int, *, due_only: bool = False) -> list[Batch]:
    """Split the send's pending deliveries into id ranges of ``batch_size`` rows, computed in the database
    (those held back by an undecided subject test left out)."""
    conditions = [
        Delivery.send_id == send_id,
        Delivery.status == DeliveryStatus.PENDING,
        *subject_variants.held_back(session, send_id),
    ]
    if due_only:
        now = utcnow()
        conditions += [
            ~held_by_a_live_claim(send_id, now),
            (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
        ]
    return id_ranges(session, Delivery.id, conditions, batch_size)


def get_send(session: Session, send_id: int) -> Send:
    send = session.get(Send, send_id)
    if send is None:
        raise send_status.no_send(send_id)
    return send


def send_counts(session: Session, send_id: int) -> SendCounts:
    """Raises NotFound."""
    send = get_send(session, send_id)
    query = send_status.session_query(session)  # the SQL `sends status` runs without SQLAlchemy (send_status)
    return SendCounts(
        send,
        send_status.list_slug(query, send.list_id),
        send_status.delivery_counts(query, send_id),
        subject_test_status.read_test(query, send_id, send.subject),
    )


def all_sends(session: Session, limit: int = 50) -> list[SendCounts]:
    ids = session.scalars(select(Send.id).order_by(Send.id.desc()).limit(limit)).all()
    return [send_counts(session, i) for i in ids]


def pause_send(session: Session, send_id: int, *, reason: str = "paused by an editor") -> Send:
    """Raises NotFound, Conflict (not sending)."""
    send = get_send(session, send_id)
    if send.status != SendStatus.SENDING:
        raise Conflict(f"send {send_id} is {send.status}; only a sending send can be paused")
    send.status, send.status_reason = SendStatus.PAUSED, reason
    return send


def resume_send(session: Session, send_id: int, batch_size: int) -> tuple[Send, list[Batch]]:
    """Continue a paused send (or re-queue a sending one whose tasks were lost); returns batches to enqueue.

    Raises NotFound, Conflict (finished or cancelled).
    """
    send = get_send(session, send_id)
    if send.status not in (SendStatus.PAUSED, SendStatus.SENDING):
        raise Conflict(f"send {send_id} is {send.status}; only a paused send can be resumed")
    send.status, send.status_reason = SendStatus.SENDING, None
    batches = pending_batches(session, send_id, batch_size)
    if not batches and not _anything_pending(session, send_id):  # (a subject test's rest may wait)
        send.status, send.finished_at = SendStatus.FINISHED, utcnow()
    return send, batches


def _anything_pending(session: Session, send_id: int) -> bool:
    return (
        session.scalar(
            select(Delivery.id).where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING).limit(1)
        )
        is not None
    )


def cancel_send(session: Session, send_id: int) -> int:
    """Cancel a send; its pending deliveries are logged as cancelled. Returns how many. Raises NotFound, Conflict."""
    send = get_send(session, send_id)
    if send.status in (SendStatus.FINISHED, SendStatus.CANCELLED):
        raise Conflict(f"send {send_id} is already {send.status}")
    now = utcnow()
    send.status, send.status_reason, send.finished_at = SendStatus.CANCELLED, "cancelled by an editor", now
    cancelled = rowcount(
        session.execute(
            update(Delivery)
            .where(Delivery.send_id == send_id, Delivery.status == DeliveryStatus.PENDING)
            .values(
                status=DeliveryStatus.CANCELLED,
                smtp_reply="send cancelled before this delivery",
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    )
    session.execute(delete(BatchClaim).where(BatchClaim.send_id == send_id))  # they hold nothing now
    subject_variants.cancel_with_send(session, send_id, now)
    return cancelled


@dataclass(frozen=True)
class LogRow:
    delivery_id: int
    email: str
    status: DeliveryStatus
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    message_id: str | None
    sent_at: datetime | None
    updated_at: datetime


#: The delivery log's columns, in order: every export of it (CLI, admin, API) writes these.
LOG_COLUMNS = [f.name for f in fields(LogRow)]


def delivery_log(session: Session, send_id: int, *, status: str | None = None) -> Iterator[LogRow]:
    """Stream the send's deliveries in id order. Raises NotFound, InvalidInput (unknown status)."""
    if status is not None and status not in tuple(DeliveryStatus):
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(DeliveryStatus)}", where="--status")
    get_send(session, send_id)
    query = (
        select(
            Delivery.id,
            Delivery.email,
            Delivery.status,
            Delivery.attempts,
            Delivery.smtp_code,
            Delivery.smtp_reply,
            Delivery.message_id,
            Delivery.sent_at,
            Delivery.updated_at,
        )
        .where(Delivery.send_id == send_id)
        .order_by(Delivery.id)
    )
    if status:
        query = query.where(Delivery.status == status)
    for row in session.execute(query.execution_options(yield_per=2000)):
        yield LogRow(*row)


def delivery_page(
    session: Session, send_id: int, *, status: str | None = None, offset: int = 0, limit: int = 100
) -> tuple[int, list[LogRow]]:
    """How many deliveries match, and one page of them in id order. Raises NotFound, InvalidInput."""
    conditions = _log_conditions(session, send_id, status)
    total = session.scalar(select(func.count()).select_from(Delivery).where(*conditions)) or 0
    rows = session.execute(_log_query(conditions).offset(offset).limit(limit))
    return total, [LogRow(*row) for row in rows]


def delivery_rows_after(
    session: Session, send_id: int, after_id: int, *, status: str | None = None, limit: int = 5000
) -> list[LogRow]:
    """The next ``limit`` deliveries with an id above ``after_id``: an export in short transactions.

    Raises NotFound, InvalidInput.
    """
    conditions = _log_conditions(session, send_id, status)
    rows = session.execute(_log_query([*conditions, Delivery.id > after_id]).limit(limit))
    return [LogRow(*row) for row in rows]


def _log_conditions(session: Session, send_id: int, status: str | None) -> list[Any]:
    if status is not None and status not in tuple(DeliveryStatus):
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(DeliveryStatus)}", where="status")
    get_send(session, send_id)
    return [Delivery.send_id == send_id] + ([Delivery.status == status] if status else [])


def _log_query(conditions: list[Any]) -> Select[*tuple[Any, ...]]:
    return (
        select(
            Delivery.id,
            Delivery.email,
            Delivery.status,
            Delivery.attempts,
            Delivery.smtp_code,
            Delivery.smtp_reply,
            Delivery.message_id,
            Delivery.sent_at,
            Delivery.updated_at,
        )
        .where(*conditions)
        .order_by(Delivery.id)
    )
