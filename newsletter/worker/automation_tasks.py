"""Celery edge of automated emails (a list's welcome, the steps of its sequence, its goodbye).

* the task that mails one batch of an automated email (ids in, one domain call:
  :func:`newsletter.delivery.automation_mailing.deliver_batch`), re-queued when rows of it are
  due again later (retries);
* :func:`plan_steps`, the scheduler's part: every few seconds its tick writes the steps now due
  (``subscribers.automation_mails.plan_due_steps``, at the clock's time) and queues them;
* :func:`reconcile`, the reconciler's part: releases the claims of worker processes of this host
  that died, and queues the due rows no task is left for once the queue is empty.

The worker registers the task by importing this module from newsletter.worker.tasks; it imports
newsletter.worker.app, never the tasks module.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from celery import Task

from newsletter.delivery import automation_mailing
from newsletter.delivery.send_queue import AUTOMATION_BATCH
from newsletter.store.models import utcnow
from newsletter.worker.app import QUEUE, WorkerState, app, policy_from, state
from subscribers import automation_mails

#: Seconds between two plannings of due steps: steps are counted in days, and each planning reads every
#: step's candidates, so the tick plans them every few seconds, not every second.
PLAN_STEPS_EVERY = 5.0
log = logging.getLogger("newsletter.automations")


@app.task(name=AUTOMATION_BATCH, bind=True)
def deliver_automation_batch(self: Task[Any, Any], automation_id: int, first_id: int, last_id: int) -> None:
    s = state()
    s.start_batch()  # several relays: this batch's relay, by weight
    result = automation_mailing.deliver_batch(
        s.sessions,
        s.automation_editions,
        s.transport,
        s.control,
        automation_id,
        first_id,
        last_id,
        policy=policy_from(s.settings),
        limiter=s.limiter,
        pacer=s.pacer,
    )
    s.end_automation_batch()
    log.info(
        "automation %s batch %s-%s: %s",
        automation_id,
        first_id,
        last_id,
        result,
        extra={"automation": automation_id, "batch": [first_id, last_id]},
    )
    if result.run_again_in is not None:
        try:
            self.apply_async((automation_id, first_id, last_id), countdown=result.run_again_in)
        except Exception:
            log.warning(
                "automation %s batch %s-%s: could not re-queue; the reconciler will",
                automation_id,
                first_id,
                last_id,
                extra={"automation": automation_id, "batch": [first_id, last_id]},
            )


def enqueue_automations(s: WorkerState, batches: Sequence[tuple[int, int, int]]) -> None:
    """Queue one task per batch (automation id, first and last row id) through this process's Celery app."""
    if batches:
        s.queue.send_tasks(AUTOMATION_BATCH, batches)


def plan_steps(s: WorkerState, now: datetime | None = None) -> int:
    """Write and queue the steps due at ``now`` (default: the clock); returns how many batches it queued.

    Without ``now`` (the tick every second) it runs every PLAN_STEPS_EVERY seconds at most, one
    scheduler at a time; with ``now`` it always runs.
    """
    if now is None and not s.control.try_lock("automation-steps", PLAN_STEPS_EVERY * 0.9):
        return 0
    with s.sessions() as session, session.begin():
        batches = automation_mails.plan_due_steps(session, now or utcnow(), s.settings.batch_size)
    if not batches:
        return 0
    try:
        enqueue_automations(s, batches)
    except Exception:
        log.warning("%d batch(es) of steps are due but could not be queued; the reconciler will", len(batches))
    log.info("steps due: %d batch(es) queued", len(batches))
    return len(batches)


def reconcile(s: WorkerState, is_alive: Callable[[int], bool]) -> int:
    """Release dead local workers' claims; queue the due rows no task is left for once the queue is empty.

    Returns how many batches it queued.
    """
    released = automation_mailing.release_dead_claims(s.sessions, socket.gethostname(), is_alive)
    if released:
        log.warning("released the claims on %d automated email(s) held by worker processes that died", released)
    if s.control.redis.llen(QUEUE) > 0:
        return 0  # tasks are still flowing; they will reach these rows
    with s.sessions() as session:
        batches = automation_mails.due_batches(session, s.settings.batch_size)
    if batches:
        log.info("automated emails: queueing %d batch(es) with no task left", len(batches))
        enqueue_automations(s, batches)
    return len(batches)
