"""Celery edge: the tasks and the worker's housekeeping. Ids in, a domain call, nothing else.

The app and each process's state live in newsletter.worker.app. Each worker process builds
its state once (from newsletter.runtime: settings, database, Redis, one SMTP connection) and
reuses it for every batch (and every confirmation email, see
``send_confirmation``). Tasks are acknowledged only after they ran
(acks_late) and given back if their worker dies (reject_on_worker_lost); the claims and the
journal in the domain make a re-run skip what was done. The worker's main process also
runs a small reconciler every few seconds that re-queues batches whose tasks were lost
(a killed worker's task, a Redis restart without persistence), so every send finishes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Task, signals
from sqlalchemy import select
from sqlalchemy.orm import configure_mappers

from newsletter import logs
from newsletter.delivery import batch_loop, confirmation_mailing, notices, recipient_store, send_health, sending
from newsletter.delivery.send_queue import (
    DELIVER_BATCH,
    REQUEST_CONFIRMATIONS,
    SEND_CONFIRMATION,
    SEND_PREFERENCES_LINK,
)
from newsletter.errors import PermanentDeliveryError, RenderError, TemporaryDeliveryError
from newsletter.store.models import Send
from newsletter.store.states import SendStatus
from newsletter.worker import automation_tasks, scheduler_tasks
from newsletter.worker.app import (
    QUEUE,
    WorkerState,
    app,
    configure,
    current_state,
    enqueue,
    enqueue_confirmation_run,
    policy_from,
    state,
)

__all__ = [
    "QUEUE",
    "WorkerState",
    "app",
    "automation_tasks",  # imported for its task: the worker mails the automated emails too
    "configure",
    "deliver_batch",
    "enqueue",
    "enqueue_confirmation_run",
    "reconcile_once",
    "request_confirmations",
    "scheduler_tasks",  # imported for its task: the worker runs the scheduler's ticks too
    "send_confirmation",
    "send_preferences_link",
    "state",
]

RECONCILE_SECONDS = 5.0
log = logging.getLogger("newsletter.worker")


@app.task(name=DELIVER_BATCH, bind=True)
def deliver_batch(self: Task[Any, Any], send_id: int, first_id: int, last_id: int) -> None:
    s = state()
    s.start_batch()  # several relays: this batch's relay, by weight
    result = batch_loop.deliver_batch(
        recipient_store.SqlRecipientStore(s.sessions, send_id, first_id, last_id),
        s.editions,
        s.transport,
        s.control,
        policy=policy_from(s.settings),
        limiter=s.limiter,
        on_smtp_trouble=s.smtp_trouble,
        pacer=s.pacer,
    )
    s.end_batch(send_id)  # several relays: each one's share of the send
    log.info(
        "send %s batch %s-%s: %s",
        send_id,
        first_id,
        last_id,
        result,
        extra={"send_id": send_id, "batch": [first_id, last_id]},
    )
    if result.run_again_in is not None:
        try:
            self.apply_async((send_id, first_id, last_id), countdown=result.run_again_in)
        except Exception:
            log.warning(
                "send %s batch %s-%s: could not re-queue; the reconciler will",
                send_id,
                first_id,
                last_id,
                extra={"send_id": send_id, "batch": [first_id, last_id]},
            )


@app.task(name=SEND_CONFIRMATION, bind=True, max_retries=None)
def send_confirmation(self: Task[Any, Any], subscription_id: int, requested_at: int) -> None:
    """Email a subscription request's confirmation link; temporary SMTP errors retry with backoff."""
    s = state()
    _mail_notice(
        self,
        f"confirmation for subscription {subscription_id}",
        lambda: notices.send_confirmation(
            s.sessions,
            s.transport,
            s.render_settings,
            s.signer,
            subscription_id,
            requested_at,
            confirm_days=s.settings.confirm_days,
            outbound=s.outbound,
        ),
        not_sent="no longer needed, not sent",
    )


@app.task(name=SEND_PREFERENCES_LINK, bind=True, max_retries=None)
def send_preferences_link(self: Task[Any, Any], subscriber_id: int, list_id: int) -> None:
    """Email a fresh preferences link (asked for from an expired one); retried like a confirmation."""
    from newsletter.delivery import preferences_mail

    s = state()
    _mail_notice(
        self,
        f"preferences link for subscriber {subscriber_id}",
        lambda: preferences_mail.send_preferences_link(
            s.sessions,
            s.transport,
            s.render_settings,
            s.signer,
            subscriber_id,
            list_id,
            preferences_days=s.settings.preferences_days,
            outbound=s.outbound,
        ),
        not_sent="not sent (gone or suppressed)",
    )


def _mail_notice(task: Task[Any, Any], what: str, mail: Callable[[], str | None], *, not_sent: str) -> None:
    """Mail one notice: a temporary SMTP error retries the task with backoff until NEWSLETTER_MAX_ATTEMPTS,
    a permanent one or a template error is logged and dropped."""
    settings = state().settings
    try:
        message_id = mail()
    except TemporaryDeliveryError as exc:
        attempt = task.request.retries + 1
        if attempt >= settings.max_attempts:
            log.warning("%s: gave up after %d attempts: %s", what, attempt, exc)
            return
        raise task.retry(countdown=policy_from(settings).backoff(attempt)) from None
    except (PermanentDeliveryError, RenderError) as exc:
        log.warning("%s not sent: %s", what, exc)
        return
    log.info("%s: %s", what, message_id or not_sent)


@app.task(name=REQUEST_CONFIRMATIONS, bind=True)
def request_confirmations(self: Task[Any, Any], run_id: int, first_id: int, last_id: int) -> None:
    """Mail one batch of a request to confirm (`newsletter lists request-confirmation`)."""
    s = state()
    result = confirmation_mailing.deliver_batch(
        s.sessions,
        s.transport,
        s.render_settings,
        s.signer,
        run_id,
        first_id,
        last_id,
        confirm_days=s.settings.confirm_days,
        policy=policy_from(s.settings),
        limiter=s.limiter,
        outbound=s.outbound,
    )
    log.info(
        "confirmation run %s batch %s-%s: %s",
        run_id,
        first_id,
        last_id,
        result,
        extra={"confirmation_run": run_id, "batch": [first_id, last_id]},
    )
    if result.run_again_in is not None:
        try:
            self.apply_async((run_id, first_id, last_id), countdown=result.run_again_in)
        except Exception:
            log.warning(
                "confirmation run %s batch %s-%s: could not re-queue; the reconciler will",
                run_id,
                first_id,
                last_id,
                extra={"confirmation_run": run_id, "batch": [first_id, last_id]},
            )


def reconcile_once(s: WorkerState) -> int:
    """Re-queue due batches of sending sends when the queue is empty; finish sends with nothing pending.

    Returns how many batches were queued.
    """
    if not s.control.try_lock("reconcile", RECONCILE_SECONDS * 0.8):
        return 0
    with s.sessions() as session:
        send_ids = session.scalars(select(Send.id).where(Send.status == SendStatus.SENDING)).all()
    if send_ids:
        released = recipient_store.release_dead_claims(s.sessions, socket.gethostname(), _process_alive)
        if released:
            log.warning("released the claims on %d batch(es) held by worker processes that died", released)
    queued = 0
    for send_id in send_ids:
        if recipient_store.finish_if_done(s.sessions, send_id):
            continue
        if s.control.redis.llen(QUEUE) > 0:
            continue  # tasks are still flowing; they will reach these rows
        with s.sessions() as session:
            batches = sending.pending_batches(session, send_id, s.settings.batch_size, due_only=True)
        if batches:
            log.warning(
                "send %s: re-queueing %d batch(es) with no task left", send_id, len(batches), extra={"send_id": send_id}
            )
            enqueue(send_id, batches)
            queued += len(batches)
    return queued + _reconcile_confirmation_runs(s) + automation_tasks.reconcile(s, _process_alive)


def _reconcile_confirmation_runs(s: WorkerState) -> int:
    """The same for requests to confirm: finish runs with nothing left, re-queue due rows whose tasks were lost."""
    from subscribers import confirmation_requests

    with s.sessions() as session:
        run_ids = confirmation_requests.unfinished_runs(session)
    queued = 0
    for run_id in run_ids:
        if confirmation_mailing.finish_if_done(s.sessions, run_id) or s.control.redis.llen(QUEUE) > 0:
            continue
        with s.sessions() as session:
            batches = confirmation_requests.pending_batches(session, run_id, s.settings.batch_size, due_only=True)
        if batches:
            log.warning(
                "confirmation run %s: re-queueing %d batch(es) with no task left",
                run_id,
                len(batches),
                extra={"confirmation_run": run_id},
            )
            enqueue_confirmation_run(run_id, batches)
            queued += len(batches)
    return queued


def _process_alive(pid: int) -> bool:
    """Whether a process of this host still runs; a zombie (killed, not yet reaped) does not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _reconcile_forever() -> None:
    while True:
        time.sleep(RECONCILE_SECONDS)
        try:
            reconcile_once(state())
        except Exception:
            log.exception("reconcile failed; trying again in %s s", RECONCILE_SECONDS)


@signals.setup_logging.connect
def _setup_logging(loglevel: str | int | None = None, **_: object) -> None:
    """Worker and scheduler log in NEWSLETTER_LOG_FORMAT (text or JSON lines), not Celery's own format."""
    logs.configure(state().settings.log_format, loglevel or "INFO")


@signals.worker_ready.connect
def _start_reconciler(**_: object) -> None:
    _beat_once()  # at once: `sends status` knows a worker runs as soon as it is ready
    threading.Thread(target=_beat_forever, name="newsletter-heartbeat", daemon=True).start()
    threading.Thread(target=_reconcile_forever, name="newsletter-reconcile", daemon=True).start()


_STARTED = time.time()


def _beat_once() -> None:
    """Publish the main process's heartbeat (see send_health): readers tell "no worker" from "slow"."""
    s = state()
    beat = send_health.WorkerBeat(
        name=f"{socket.gethostname()}:{os.getpid()}",
        host=socket.gethostname(),
        pid=os.getpid(),
        smtp=s.settings.smtp_names,
        started=_STARTED,
        at=time.time(),
    )
    try:
        send_health.publish_heartbeat(s.control.redis, beat)
    except redis.RedisError as exc:
        log.warning("heartbeat not published (%s); trying again in %s s", exc, send_health.HEARTBEAT_SECONDS)


def _beat_forever() -> None:
    while True:
        time.sleep(send_health.HEARTBEAT_SECONDS)
        _beat_once()


@signals.worker_shutdown.connect
def _withdraw_heartbeat(**_: object) -> None:
    try:
        send_health.withdraw_heartbeat(state().control.redis, f"{socket.gethostname()}:{os.getpid()}")
    except redis.RedisError:
        pass  # the heartbeat lapses on its own


@signals.worker_process_init.connect
def _warm_up(**_: object) -> None:
    """Open the database, Redis and SMTP connections as each pool process starts, not on its first batch."""
    s = state()
    try:
        configure_mappers()  # SQLAlchemy's first ORM query would do it (0.1-0.3 s), inside the first batch
        with s.sessions() as session:
            session.execute(select(1))
        s.control.redis.ping()
        s.outbound  # noqa: B018 - reads the DKIM key now, not on the first message
        s.transport.connect()
    except Exception as exc:
        log.warning("warm-up incomplete (%s); the first batch will connect", exc)


@signals.worker_process_shutdown.connect
def _close_transport(**_: object) -> None:
    s = current_state()
    if s is not None and "transport" in s.__dict__:
        s.transport.close()
