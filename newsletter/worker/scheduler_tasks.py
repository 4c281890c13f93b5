"""Celery edge of scheduling: the tick that `newsletter scheduler` (Celery beat) sends every second.

Each tick, run by a worker, plans ready issues into their lists' weekly slots, starts
every scheduled send that is due, decides every subject test whose wait is over (its rest's
batches queued), and every few seconds queues the steps of the lists' sequences that came due
(``automation_tasks.plan_steps``). Several schedulers may run (for availability): their ticks
take a short Redis lock so one runs at a time, and starting a send is guarded in the database
(see newsletter.delivery.scheduling), so a send starts once whatever the lock does; a test is
decided once (a conditional update) and a step written once per person (a unique row), likewise.

The worker registers this task by importing the module from newsletter.worker.tasks; it
imports newsletter.worker.app, never the tasks module (no import cycle).
"""

from __future__ import annotations

import logging
from datetime import datetime

from newsletter.delivery import scheduling, subject_tests
from newsletter.delivery.send_queue import DELIVER_BATCH
from newsletter.engagement import rollup
from newsletter.store.models import Send
from newsletter.store.states import SendStatus
from newsletter.worker import automation_tasks
from newsletter.worker.app import WorkerState, app, enqueue, state

TICK_SECONDS = 1.0
ROLL_UP_EVERY = 3600.0  # seconds between two closings of report windows (newsletter.engagement.rollup)
log = logging.getLogger("newsletter.scheduler")


@app.task(name="newsletter.scheduler_tick", ignore_result=True)
def scheduler_tick() -> int:
    return run_tick(state())


def run_tick(s: WorkerState, now: datetime | None = None) -> int:
    """Plan ready issues, start due sends and decide due subject tests (and, hourly, close tracked sends'
    report windows); returns how many sends started."""
    if not s.control.try_lock("scheduler-tick", TICK_SECONDS * 0.9):
        return 0
    if s.control.try_lock("engagement-windows", ROLL_UP_EVERY):
        with s.sessions() as session, session.begin():
            settings = s.settings
            done = rollup.close_windows(session, settings.report_window_days, settings.tracking_retention_days, now)
        log.info("engagement: %s", done)
    with s.sessions() as session, session.begin():
        plan = scheduling.plan_ready_issues(session, s.render_settings, now=now)
        planned = [(send.id, send.issue_id, send.scheduled_at) for send in plan.scheduled]
    for send_id, issue_id, at in planned:
        log.info(
            "issue %s planned into its list's weekly slot: send %s at %s",
            issue_id,
            send_id,
            at,
            extra={"send_id": send_id, "issue_id": issue_id},
        )
    for problem in plan.problems:
        log.warning("%s", problem)
    with s.sessions() as session:
        due = scheduling.due_send_ids(session, now)
    started = 0
    for send_id in due:
        try:
            with s.sessions() as session, session.begin():
                result = scheduling.start_scheduled(
                    session, send_id, s.render_settings, batch_size=s.settings.batch_size, now=now
                )
                send = session.get(Send, send_id) if result else None
                reason = send.status_reason if send else None
                cancelled = send is not None and send.status == SendStatus.CANCELLED
        except Exception:
            # One send that cannot start (a bug, a row the code cannot read) must not hold back the others:
            # each due send is started on its own, and this one is tried again next tick.
            log.exception("send %s is due but could not be started", send_id, extra={"send_id": send_id})
            continue
        if result is None:
            continue  # another scheduler's tick started it
        if cancelled:
            log.warning("send %s was due but is not sent: %s", send_id, reason, extra={"send_id": send_id})
            continue
        started += 1
        if result.batches:
            enqueue(send_id, result.batches)
        log.info(
            "send %s started: %d batch(es) queued%s",
            send_id,
            len(result.batches),
            f" ({reason})" if reason else "",
            extra={"send_id": send_id, "late_seconds": result.late_by.total_seconds() if result.late_by else 0},
        )
    decide_subject_tests(s, now)
    try:
        automation_tasks.plan_steps(s, now)  # the sequences' steps due now (every few seconds)
    except Exception:
        log.exception("the steps due now could not be planned; trying again next tick")
    return started


def decide_subject_tests(s: WorkerState, now: datetime | None = None) -> int:
    """Decide each subject test whose wait is over and queue its rest's batches; returns how many it decided.

    Each is decided in its own transaction whose conditional update is the claim
    (newsletter.delivery.subject_tests): a test another tick decided is left alone, and one that raises
    is tried again next tick without holding back the others.
    """
    with s.sessions() as session:
        due = subject_tests.due(session, now)
    decided = 0
    for send_id in due:
        try:
            with s.sessions() as session, session.begin():
                result = subject_tests.decide_due(session, send_id, batch_size=s.settings.batch_size, now=now)
        except Exception:
            log.exception(
                "send %s: its subject test is due but could not be decided", send_id, extra={"send_id": send_id}
            )
            continue
        if result is None:
            continue  # another scheduler's tick decided it
        decided += 1
        if result.batches:
            try:
                s.queue.send_tasks(DELIVER_BATCH, [(send_id, first, last) for first, last in result.batches])
            except Exception:  # decided and committed: a worker's reconciler queues the rest's due rows
                log.warning("send %s: the rest's batches could not be queued; the reconciler will", send_id)
        log.info(
            "send %s: subject test decided, %s won; %d batch(es) of the rest (%d) queued%s. %s",
            send_id,
            result.winner,
            len(result.batches),
            result.remainder,
            "" if result.send_status == SendStatus.SENDING else f" (the send is {result.send_status})",
            result.reason,
            extra={"send_id": send_id},
        )
    return decided


def beat_schedule() -> dict[str, dict[str, object]]:
    return {
        "scheduler-tick": {
            "task": "newsletter.scheduler_tick",
            "schedule": TICK_SECONDS,
            "options": {"expires": 30},  # ticks queued while no worker runs are dropped, not replayed
        }
    }
