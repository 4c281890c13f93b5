"""Mailing one batch of a request to confirm: the worker side of :mod:`subscribers.confirmation_requests`.

A batch is a range of row ids of one run. The worker claims the range's pending rows (a
claim lapses unless renewed, so rows held by a dead worker come back), then for each row:
renders the confirmation email for that person (``notices.confirmation_message``, asking
on the list's behalf), waits for a token of the shared rate limit (the same bucket sends
use, ``NEWSLETTER_SEND_RATE``), marks the row "sending" and commits, hands the message to
the SMTP server, and commits the outcome.

**Why a commit on each side of the SMTP handoff, rather than a send's Redis journal.** A
send mails thousands of people a second and cannot afford two database writes per message;
a request to confirm goes out once per person, rendered per person (about 10 ms each, far
more than two small commits), usually rate-limited anyway. So the database alone is the
journal, and the rule is simple and strict: a row is mailed only by the worker that moved it
from "pending" to "sending", and a row in "sending" is never mailed again.

* A task redelivered after its worker died (acks_late, reject on worker lost), or a second
  task for the same range (the reconciler, a retry), finds the rows already sent or held by
  a live claim and mails none of them again.
* A worker killed mid-batch leaves its rows pending (taken over once the claim lapses) and at
  most one row in "sending": the one whose SMTP transaction was in flight. Whether that one
  went out cannot be known, so it is logged as failed with that explanation and never sent
  again (at most once: for a consent request an unwanted second email is worse than one
  missed ask, which ``--again`` can repair). A crash loses nothing else: the run and its
  rows are in the database, and the worker's reconciler re-queues unfinished runs whose
  tasks were lost (see ``newsletter.worker.tasks``).

4xx replies and connection errors retry with backoff (``NEWSLETTER_RETRY_DELAY``, up to
``NEWSLETTER_MAX_ATTEMPTS``); an SMTP server that cannot be reached at all (connect, TLS,
login) gives up on nobody: the batch waits for its next try, as a send's does; 5xx replies fail that person for good (an unknown mailbox is
also suppressed, as for a send). Someone who confirmed, left, or was suppressed since the
run started is skipped and logged so.

The Celery task is a thin wrapper around :func:`deliver_batch`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker, undefer

from newsletter.content.issues import RenderSettings
from newsletter.delivery.batch_loop import BROKER_RETRY_SECONDS, BatchResult, DeliveryPolicy
from newsletter.delivery.notices import confirmation_message
from newsletter.delivery.ports import Transport
from newsletter.delivery.recipient_store import worker_name
from newsletter.delivery.send_control import ControlUnavailable, RateLimiter
from newsletter.delivery.stops import StopKind, StopReason
from newsletter.errors import (
    PermanentDeliveryError,
    RenderError,
    SmtpUnreachable,
    TemporaryDeliveryError,
    UnknownRecipient,
)
from newsletter.mail.messages import CompiledMessage, ascii_address
from newsletter.mail.outbound import PLAIN, Outbound
from newsletter.store.models import ConfirmationRun, MailingList, utcnow
from newsletter.store.states import ConfirmationMailStatus, ConfirmationRunStatus
from subscribers import confirmation_requests as store
from subscribers.consent import PendingConfirmation
from subscribers.tokens import TokenSigner

log = logging.getLogger("newsletter.confirmations")


def deliver_batch(
    sessions: sessionmaker[Session],
    transport: Transport,
    render: RenderSettings,
    signer: TokenSigner,
    run_id: int,
    first_id: int,
    last_id: int,
    *,
    confirm_days: float,
    policy: DeliveryPolicy,
    limiter: RateLimiter | None = None,
    outbound: Outbound = PLAIN,
) -> BatchResult:
    """Mail the due, pending rows of run ``run_id`` with ids in [first_id, last_id].

    Never raises for one person's delivery error: each becomes an outcome in the run's log.
    ``run_again_in`` says when rows of the range are due again (retries), if any are left.
    """
    me = worker_name()
    with sessions() as session, session.begin():
        run = session.get(ConfirmationRun, run_id)
        if run is None or run.status != ConfirmationRunStatus.SENDING:
            return BatchResult()
        # Its language is deferred: loaded now, as the letters are rendered after the session closes.
        mailing_list = session.get(MailingList, run.list_id, options=[undefer(MailingList.language)])
        assert mailing_list is not None
        tag = f"confirm-run.{run.id}.{int(run.created_at.timestamp()):x}"
        rows = store.claim(session, run_id, first_id, last_id, me, policy.claim_seconds)
    batch = _Batch(sessions, run_id, first_id, last_id, me, policy)
    letters = _Letters(render, signer, mailing_list, confirm_days, tag)
    for row in rows:
        batch.renew_if_due()
        try:
            message, message_id, data = letters.letter(row)
        except RenderError as exc:
            batch.record(
                row, status=ConfirmationMailStatus.FAILED, code=None, reply=f"not sent: {exc}", message_id=None
            )
            batch.result.failed += 1
            continue
        if limiter is not None:
            try:
                limiter.wait()
            except ControlUnavailable as exc:
                return batch.stop(exc.stop_reason, BROKER_RETRY_SECONDS)
        if not batch.hand_over(row):
            continue
        try:
            reply = transport.send(outbound.envelope_from(message), ascii_address(row.email), outbound.seal(data))
        except PermanentDeliveryError as exc:
            batch.failed(row, exc, message_id)
        except TemporaryDeliveryError as exc:
            if batch.temporary(row, exc, message_id):
                return batch.result
        else:
            batch.result.sent += 1
            batch.record(
                row, status=ConfirmationMailStatus.SENT, code=reply.code, reply=reply.text, message_id=message_id
            )
    return batch.after()


def finish_if_done(sessions: sessionmaker[Session], run_id: int) -> bool:
    with sessions() as session, session.begin():
        return store.finish_if_done(session, run_id)


@dataclass(frozen=True)
class _Letters:
    """Renders the confirmation email for each person of a run, asking on the list's behalf."""

    render: RenderSettings
    signer: TokenSigner
    mailing_list: MailingList
    confirm_days: float
    tag: str

    def letter(self, row: store.Claimed) -> tuple[CompiledMessage, str, bytes]:
        """(message, Message-ID, wire bytes) of ``row``'s email. Raises RenderError."""
        # The link's time is its email's, not the import's nor the run's start: it lives the whole lifetime
        # the email promises, however long a rate-limited run (or an SMTP outage) takes to reach this person.
        pending = PendingConfirmation(
            row.subscription_id, row.subscriber_id, row.email, row.name, self.mailing_list, int(time.time())
        )
        message, recipient = confirmation_message(
            pending,
            self.render,
            self.signer,
            confirm_days=self.confirm_days,
            asked_by_list=True,
            message_tag=self.tag,
            log_id=row.row_id,
        )
        message_id, data = message.build(recipient)
        return message, message_id, data


@dataclass
class _Batch:
    """The rows of one batch this worker holds, and what became of them."""

    sessions: sessionmaker[Session]
    run_id: int
    first_id: int
    last_id: int
    me: str
    policy: DeliveryPolicy
    result: BatchResult = field(default_factory=BatchResult)
    last_renew: float = field(default_factory=time.monotonic)

    def renew_if_due(self) -> None:
        if time.monotonic() - self.last_renew >= self.policy.claim_seconds / 3:
            self.last_renew = time.monotonic()
            with self.sessions() as session, session.begin():
                store.renew(session, self.run_id, self.first_id, self.last_id, self.me, self.policy.claim_seconds)

    def hand_over(self, row: store.Claimed) -> bool:
        """Mark the row "sending" and commit, if it may still be mailed; returns whether to mail it now."""
        with self.sessions() as session, session.begin():
            handoff = store.hand_over(session, row.row_id, self.me)
        if handoff is store.Handoff.SKIPPED:
            self.result.skipped += 1
        return handoff is store.Handoff.GO

    def failed(self, row: store.Claimed, exc: PermanentDeliveryError, message_id: str) -> None:
        self.result.failed += 1
        self.record(
            row,
            status=ConfirmationMailStatus.FAILED,
            code=exc.code,
            reply=str(exc),
            message_id=message_id,
            suppress_as_hard_bounce=isinstance(exc, UnknownRecipient),
        )
        log.info(
            "confirmation run %s row %s failed: %s",
            self.run_id,
            row.row_id,
            exc,
            extra={"confirmation_run": self.run_id, "smtp_code": exc.code},
        )

    def temporary(self, row: store.Claimed, exc: TemporaryDeliveryError, message_id: str) -> bool:
        """Log a retry, or a failure past the last attempt; returns True when the batch stops here."""
        attempts = row.attempts + 1
        # No session with the server (connect, TLS, login): not this person's doing, so it never
        # gives up on them, and the whole batch waits for the server's next try (as a send does).
        unreachable = isinstance(exc, SmtpUnreachable)
        delay = self.policy.connect_backoff(attempts) if unreachable else self.policy.backoff(attempts)
        if attempts >= self.policy.max_attempts and not unreachable:
            self.result.failed += 1
            reply = f"gave up after {attempts} attempts: {exc}"
            self.record(row, status=ConfirmationMailStatus.FAILED, code=exc.code, message_id=message_id, reply=reply)
        else:
            self.result.retrying += 1
            due = utcnow() + timedelta(seconds=delay)
            self.record(
                row,
                status=ConfirmationMailStatus.PENDING,
                code=exc.code,
                reply=str(exc),
                message_id=message_id,
                next_attempt_at=due,
            )
        log.info(
            "confirmation run %s row %s: temporary error, attempt %d: %s",
            self.run_id,
            row.row_id,
            attempts,
            exc,
            extra={"confirmation_run": self.run_id, "smtp_code": exc.code},
        )
        if exc.code is not None:
            return False
        # The connection failed: the rest of the batch would fail the same way (worded as it always was).
        kind = StopKind.SMTP_UNREACHABLE if unreachable else StopKind.CONNECTION_LOST
        self.stop(
            StopReason(kind, f"SMTP server unreachable: {exc}"),
            delay,
            due_at=utcnow() + timedelta(seconds=delay) if unreachable else None,
        )
        return True

    def stop(self, reason: StopReason, run_again_in: float, *, due_at: datetime | None = None) -> BatchResult:
        """Give the held rows back (due again at ``due_at`` if given) and end the batch early."""
        self.result.stopped = reason
        with self.sessions() as session, session.begin():
            store.release(session, self.run_id, self.first_id, self.last_id, self.me, due_at=due_at)
        self.result.run_again_in = run_again_in
        return self.result

    def record(
        self,
        row: store.Claimed,
        *,
        status: str,
        code: int | None,
        reply: str,
        message_id: str | None,
        next_attempt_at: datetime | None = None,
        suppress_as_hard_bounce: bool = False,
    ) -> None:
        """Log one attempt (see ``confirmation_requests.record_outcome``), committed at once."""
        with self.sessions() as session, session.begin():
            store.record_outcome(
                session,
                row,
                status=status,
                code=code,
                reply=reply,
                message_id=message_id,
                next_attempt_at=next_attempt_at,
                suppress_as_hard_bounce=suppress_as_hard_bounce,
            )

    def after(self) -> BatchResult:
        """Say when rows of the range are due again; finish the run if nothing is left."""
        with self.sessions() as session, session.begin():
            self.result.run_again_in = store.next_due(session, self.run_id, self.first_id, self.last_id)
            store.finish_if_done(session, self.run_id)
        return self.result
