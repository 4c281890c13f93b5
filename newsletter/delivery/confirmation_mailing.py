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
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from newsletter.content.issues import RenderSettings
from newsletter.delivery.batch_loop import BatchResult, DeliveryPolicy, Transport, worker_name
from newsletter.delivery.notices import confirmation_message
from newsletter.delivery.send_control import ControlUnavailable, RateLimiter
from newsletter.errors import PermanentDeliveryError, RenderError, SmtpUnreachable, TemporaryDeliveryError
from newsletter.mail.messages import ascii_address
from newsletter.mail.outbound import PLAIN, Outbound
from newsletter.mail.transport import is_unknown_user
from newsletter.store.models import ConfirmationRun, MailingList, utcnow
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
    result = BatchResult()
    with sessions() as session, session.begin():
        run = session.get(ConfirmationRun, run_id)
        if run is None or run.status != "sending":
            return result
        mailing_list = session.get(MailingList, run.list_id)
        assert mailing_list is not None
        tag = f"confirm-run.{run.id}.{int(run.created_at.timestamp()):x}"
        rows = store.claim(session, run_id, first_id, last_id, me, policy.claim_seconds)
    if not rows:
        return _after(sessions, result, run_id, first_id, last_id)

    last_renew = time.monotonic()
    for row in rows:
        if time.monotonic() - last_renew >= policy.claim_seconds / 3:
            last_renew = time.monotonic()
            with sessions() as session, session.begin():
                store.renew(session, run_id, first_id, last_id, me, policy.claim_seconds)
        # The link's time is its email's, not the import's nor the run's start: it lives the whole lifetime
        # the email promises, however long a rate-limited run (or an SMTP outage) takes to reach this person.
        pending = PendingConfirmation(
            row.subscription_id, row.subscriber_id, row.email, row.name, mailing_list, int(time.time())
        )
        try:
            message, recipient = confirmation_message(
                pending,
                render,
                signer,
                confirm_days=confirm_days,
                asked_by_list=True,
                message_tag=tag,
                log_id=row.row_id,
            )
            message_id, data = message.build(recipient)
        except RenderError as exc:
            _record(sessions, row, status="failed", code=None, reply=f"not sent: {exc}", message_id=None)
            result.failed += 1
            continue
        if limiter is not None:
            try:
                limiter.wait()
            except ControlUnavailable as exc:
                result.stopped = str(exc)
                _release(sessions, run_id, first_id, last_id, me)
                result.run_again_in = 5.0
                return result
        with sessions() as session, session.begin():
            handoff = store.hand_over(session, row.row_id, me)
        if handoff is store.Handoff.SKIPPED:
            result.skipped += 1
        if handoff is not store.Handoff.GO:
            continue
        try:
            reply = transport.send(outbound.envelope_from(message), ascii_address(row.email), outbound.seal(data))
        except PermanentDeliveryError as exc:
            result.failed += 1
            _record(
                sessions,
                row,
                status="failed",
                code=exc.code,
                reply=str(exc),
                message_id=message_id,
                suppress_as_hard_bounce=is_unknown_user(exc),
            )
            log.info(
                "confirmation run %s row %s failed: %s",
                run_id,
                row.row_id,
                exc,
                extra={"confirmation_run": run_id, "smtp_code": exc.code},
            )
        except TemporaryDeliveryError as exc:
            attempts = row.attempts + 1
            # No session with the server (connect, TLS, login): not this person's doing, so it never
            # gives up on them, and the whole batch waits for the server's next try (as a send does).
            unreachable = isinstance(exc, SmtpUnreachable)
            delay = policy.connect_backoff(attempts) if unreachable else policy.backoff(attempts)
            if attempts >= policy.max_attempts and not unreachable:
                result.failed += 1
                _record(
                    sessions,
                    row,
                    status="failed",
                    code=exc.code,
                    message_id=message_id,
                    reply=f"gave up after {attempts} attempts: {exc}",
                )
            else:
                result.retrying += 1
                _record(
                    sessions,
                    row,
                    status="pending",
                    code=exc.code,
                    reply=str(exc),
                    message_id=message_id,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                )
            log.info(
                "confirmation run %s row %s: temporary error, attempt %d: %s",
                run_id,
                row.row_id,
                attempts,
                exc,
                extra={"confirmation_run": run_id, "smtp_code": exc.code},
            )
            if exc.code is None:
                # The connection failed: the rest of the batch would fail the same way.
                result.stopped = f"SMTP server unreachable: {exc}"
                _release(
                    sessions,
                    run_id,
                    first_id,
                    last_id,
                    me,
                    due_at=utcnow() + timedelta(seconds=delay) if unreachable else None,
                )
                result.run_again_in = delay
                return result
        else:
            result.sent += 1
            _record(sessions, row, status="sent", code=reply.code, reply=reply.text, message_id=message_id)
    return _after(sessions, result, run_id, first_id, last_id)


def finish_if_done(sessions: sessionmaker[Session], run_id: int) -> bool:
    with sessions() as session, session.begin():
        return store.finish_if_done(session, run_id)


def _after(
    sessions: sessionmaker[Session], result: BatchResult, run_id: int, first_id: int, last_id: int
) -> BatchResult:
    with sessions() as session, session.begin():
        result.run_again_in = store.next_due(session, run_id, first_id, last_id)
        store.finish_if_done(session, run_id)
    return result


def _record(sessions: sessionmaker[Session], row: store.Claimed, **outcome: object) -> None:
    with sessions() as session, session.begin():
        store.record_outcome(session, row, **outcome)  # type: ignore[arg-type]


def _release(
    sessions: sessionmaker[Session], run_id: int, first_id: int, last_id: int, me: str, due_at: datetime | None = None
) -> None:
    with sessions() as session, session.begin():
        store.release(session, run_id, first_id, last_id, me, due_at=due_at)
