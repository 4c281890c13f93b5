"""`newsletter send`, `newsletter sends ...` and `newsletter worker`: deliver issues and watch them go."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import typer

from newsletter.cli.runtime import err, out, print_last_line, render_settings, runtime
from newsletter.cli.tables import Col, listing
from newsletter.errors import InvalidInput
from newsletter.store.states import DeliveryStatus, SendStatus

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from rich.progress import Progress, TaskID

    from newsletter.delivery import sending  # imported by the commands that use it: `sends status` reads without it
    from newsletter.delivery.audience import Repeat
    from newsletter.delivery.subject_variants import SubjectTestPlan
    from newsletter.engagement.report import SubjectTestReport

app = typer.Typer(help="Watch and steer sends: status, delivery log, pause, resume, cancel.", no_args_is_help=True)
WAIT_TIMEOUT_EXIT = 124  # --wait-timeout ran out, as timeout(1) exits when its time is up
ENDED = (SendStatus.FINISHED, SendStatus.CANCELLED, SendStatus.PAUSED)  # a send in one of these moves no more by itself


def _enqueue(send_id: int, batches: list[sending.Batch]) -> None:
    from newsletter.delivery.send_queue import queue_batches

    queue_batches(runtime.tasks, send_id, batches)  # QueueUnavailable: one error line saying what to do


def start(
    issue_id: int = typer.Argument(..., help="The issue to send."),
    list_slugs: list[str] | None = typer.Option(
        None,
        "--list",
        help="Send to this list instead of the issue's own; repeat it to send to several lists at once "
        "(each address once; the first list's sender and List-Id).",
    ),
    segment: str | None = typer.Option(
        None, "--segment", help="Only the subscribers of this saved segment of the list (`newsletter segments`)."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Show progress until the send finishes; exit 1 if any delivery failed."
    ),
    at: str | None = typer.Option(
        None, "--at", help="Schedule it instead: an ISO 8601 time with its offset, e.g. 2026-12-07T08:00+01:00."
    ),
    again: bool = typer.Option(
        False, "--again", help="The list already has a send of this issue: send it to every confirmed subscriber again."
    ),
    only_new: bool = typer.Option(
        False,
        "--only-new",
        help="Send only to confirmed subscribers who got no copy of this issue in any earlier send.",
    ),
    wait_timeout: float | None = typer.Option(
        None,
        "--wait-timeout",
        min=0.1,
        metavar="SECONDS",
        help=f"With --wait (implied): give up waiting after this many seconds, exit {WAIT_TIMEOUT_EXIT}; the send goes on.",
    ),
    subject_test: str | None = typer.Option(
        None,
        "--subject-test",
        metavar="SUBJECT",
        help="Test this other subject (B) against the issue's (A) on a share of the recipients, half each; "
        "the winner goes to the rest. Every list must track clicks (`lists update SLUG --tracking anonymous`).",
    ),
    test_share: int | None = typer.Option(
        None,
        "--test-share",
        metavar="PERCENT",
        help="With --subject-test: the share of the recipients tested (default 20).",
    ),
    decide_after: str | None = typer.Option(
        None,
        "--decide-after",
        metavar="WAIT",
        help="With --subject-test: when the scheduler decides, after the start: 2h, 90m, 1d, 0s (default 4h).",
    ),
) -> None:
    """Send an issue: render it once, snapshot the list's confirmed subscribers, queue the batches.

    Workers (`newsletter worker`) deliver them. With --at the send is stored as scheduled and
    `newsletter scheduler` starts it then. Prints the send id alone on the last line.

    A list that already has a send of the issue (anything but cancelled) is refused unless
    --again or --only-new says what to do; a send that would reach no one is refused, saying why.

    Several --list options send to all of those lists at once: every confirmed, unsuppressed
    subscriber of any of them gets one copy, whose unsubscribe link is for a list they are on.
    --segment narrows one list to a saved segment (it cannot be combined with several lists).

    --subject-test sends the other subject to half of --test-share % of the recipients (chosen at
    random) and the issue's to the other half; after --decide-after the scheduler sends the subject
    whose copies got the larger share of unique human clickers (openers break a tie; A on a tie)
    to the rest (`newsletter sends status ID`, `newsletter sends report ID`).
    """
    from newsletter.delivery import sending, subject_variants
    from newsletter.delivery.audience import Repeat

    repeat = _repeat(again=again, only_new=only_new)
    settings = runtime.settings  # a bad setting stops the command before anything else is said
    test = subject_variants.plan(subject_test, test_share, decide_after)
    if at is not None:
        print_last_line(
            _schedule(
                issue_id,
                at,
                list_slugs=list_slugs or [],
                segment=segment,
                repeat=repeat,
                wait=wait,
                wait_timeout=wait_timeout,
                subject_test=test,
            )
        )
        return
    runtime.tasks.warm_up()  # Celery's import and connection, while the database takes the snapshot
    with runtime.transaction() as session:
        send, batches = sending.start_send(
            session,
            issue_id,
            render_settings(),
            list_slugs=list_slugs or [],
            segment=segment,
            batch_size=settings.batch_size,
            repeat=repeat,
            subject_test=test,
        )
        tested = subject_variants.started(session, send.id) if test is not None else None
    if batches:
        _enqueue(send.id, batches)
    who = " who got no copy yet" if repeat is Repeat.ONLY_NEW else ""
    if segment or len(set(list_slugs or [])) > 1:
        of = f"segment {segment}" if segment else ", ".join(dict.fromkeys(list_slugs or []))
        who = f" ({of}){who}"
    err.print(f"Send {send.id}: {send.total} recipient(s){who} in {len(batches)} batch(es) queued.")
    if tested:
        err.print(tested)
    code = watch(send.id, timeout=wait_timeout) if wait or wait_timeout is not None else 0
    print_last_line(send.id)
    raise typer.Exit(code)


def _repeat(*, again: bool, only_new: bool) -> Repeat:
    """What --again and --only-new ask for when the list already has a send of the issue."""
    from newsletter.delivery.audience import Repeat

    if again and only_new:
        raise InvalidInput(
            "choose one of --again (everyone again) and --only-new (only those who got no copy)", where="--only-new"
        )
    return Repeat.AGAIN if again else Repeat.ONLY_NEW if only_new else Repeat.NO


def _schedule(
    issue_id: int,
    at: str,
    *,
    list_slugs: list[str],
    segment: str | None,
    repeat: Repeat,
    wait: bool,
    wait_timeout: float | None,
    subject_test: SubjectTestPlan | None = None,
) -> int:
    """Store the send as scheduled for ``at`` and say so on stderr; returns its id. --wait has nothing to wait for."""
    from newsletter.delivery import scheduling

    if wait or wait_timeout is not None:
        flag = "--wait-timeout" if wait_timeout is not None else "--wait"
        raise InvalidInput(
            f"use {flag} without --at (watch a scheduled send later with `newsletter sends watch ID`)", where=flag
        )
    when = scheduling.parse_time(at)
    with runtime.transaction() as session:
        send = scheduling.schedule_send(
            session,
            issue_id,
            when,
            render_settings(),
            list_slugs=list_slugs,
            segment=segment,
            repeat=repeat,
            subject_test=subject_test,
        )
        send_id = send.id
    err.print(
        f"Send {send_id} scheduled for {when.astimezone().isoformat(timespec='minutes')} "
        f"({when.isoformat(timespec='minutes')}); `newsletter scheduler` and a worker must be running then."
    )
    if subject_test is not None:
        err.print(f"Subject test planned: {subject_test.describe()}.")
    return send_id


def watch(send_id: int, *, timeout: float | None = None) -> int:
    """Show a progress bar on stderr until the send ends, and the send's problem as soon as it has
    one (and when it clears). Returns the exit status: 1 if any delivery failed or the send paused,
    WAIT_TIMEOUT_EXIT if ``timeout`` seconds passed first (the send goes on)."""
    from newsletter.delivery import sending
    from newsletter.delivery.send_health import SendHealth

    with runtime.transaction() as session:
        sending.get_send(session, send_id)  # an unknown send is one error line, before any progress bar
    started = time.monotonic()
    problem: str | None = None
    with SendHealth(runtime.settings, runtime.broker) as health, _progress_bar(send_id) as progress:
        bar = progress.add_task("send", total=None, detail="")
        while True:
            with runtime.transaction() as session:
                counts = sending.send_counts(session, send_id)
                found = health.problem(session, counts.send)
            _show_progress(progress, bar, counts, elapsed=time.monotonic() - started)
            problem = _tell_problem(progress, counts, found, told=problem)
            if counts.send.status in ENDED or (timeout is not None and time.monotonic() - started >= timeout):
                break
            time.sleep(0.3)
    if counts.send.status in ENDED:
        return _ended(counts)
    return _gave_up(counts, timeout or 0, problem)


def _progress_bar(send_id: int) -> Progress:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"send {send_id}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err.rich,
        transient=False,
    )


def _show_progress(progress: Progress, bar: TaskID, counts: sending.SendCounts, *, elapsed: float) -> None:
    c = counts.counts
    rate = c.get(DeliveryStatus.SENT, 0) / max(elapsed, 1e-6)
    progress.update(
        bar,
        total=counts.total or 1,
        completed=counts.total - counts.pending,
        detail=f"sent {c.get(DeliveryStatus.SENT, 0)}  failed {c.get(DeliveryStatus.FAILED, 0)}  pending {counts.pending}  {rate:,.0f}/s",
    )


def _tell_problem(progress: Progress, counts: sending.SendCounts, found: str | None, *, told: str | None) -> str | None:
    """Print a new kind of problem once, and that it cleared; returns the problem told now.

    Its changing numbers (seconds, times) are not news."""
    import re

    if re.sub(r"\d+", "#", found or "") == re.sub(r"\d+", "#", told or ""):
        return told
    if found:
        progress.console.print(f"Problem: {found}")
    elif counts.send.status == SendStatus.SENDING:
        progress.console.print(f"Problem cleared: send {counts.send.id} is moving again.")
    return found


def _gave_up(counts: sending.SendCounts, timeout: float, problem: str | None) -> int:
    send_id, done = counts.send.id, counts.total - counts.pending
    err.print(
        f"Gave up waiting after {timeout:g} s: send {send_id} is still {counts.send.status} "
        f"({done} of {counts.total} done)"
        + (f"; problem: {problem}" if problem else ".")
        + f" The send goes on by itself; watch it with: newsletter sends watch {send_id}"
    )
    return WAIT_TIMEOUT_EXIT


def _ended(counts: sending.SendCounts) -> int:
    """Sum up a send that finished, was cancelled or paused; 1 if any delivery failed or it paused."""
    send, c = counts.send, counts.counts
    reason = f" ({send.status_reason})" if send.status_reason else ""
    err.print(
        f"Send {send.id} {send.status}{reason}: sent {c.get(DeliveryStatus.SENT, 0)}, failed {c.get(DeliveryStatus.FAILED, 0)}, "
        f"skipped {c.get(DeliveryStatus.SKIPPED, 0)}, cancelled {c.get(DeliveryStatus.CANCELLED, 0)}, pending {counts.pending}."
    )
    if send.status == SendStatus.PAUSED:
        err.print(f"Resume with: newsletter sends resume {send.id}")
    return 1 if c.get(DeliveryStatus.FAILED, 0) or send.status == SendStatus.PAUSED else 0


@app.command("ls")
def list_all(
    limit: int = typer.Option(20, "--limit", help="How many recent sends."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List recent sends with their counts (newest first); --json carries each one's problem too."""
    from newsletter.delivery import sending
    from newsletter.delivery.send_health import SendHealth

    with runtime.transaction() as session, SendHealth(runtime.settings, runtime.broker) as health:
        rows = [
            {
                **row.as_json(),
                "started_at": row.send.started_at,
                "finished_at": row.send.finished_at,
                "problem": health.problem(session, row.send),
            }
            for row in sending.all_sends(session, limit)
        ]  # times as in every other listing
    columns = [
        Col("id", keep=True, right=True),
        Col("issue_id", "issue", keep=True, right=True),
        Col("list", keep=True),
        Col("status"),
        Col("total", right=True),
        Col("sent", right=True),
        Col("failed", right=True),
        Col("pending", right=True),
        Col("started_at", "started"),
        Col("finished_at", "finished"),
    ]
    listing(out, columns, rows, as_json=as_json, empty="No sends yet. Start one with: newsletter send ISSUE_ID")


@app.command()
def status(
    send_id: int = typer.Argument(..., help="The send's id."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="One JSON object: id, status, total, sent, failed, pending, ..., problem (and relays, with several).",
    ),
) -> None:
    """Show a send's status and counts, and its problem when it is stuck: null while it moves,
    otherwise one sentence saying why and what to do. With several SMTP relays, each one's share
    of the send's messages and its state (ok, or cooling down until when and why)."""
    from newsletter.delivery import send_status
    from newsletter.delivery.send_health import SendHealth
    from newsletter.store import dbapi

    # A bare DB-API connection and the SQL the ORM code shares (send_status): no SQLAlchemy, so it answers at once.
    with dbapi.reading(runtime.settings.database_url) as db, SendHealth(runtime.settings, runtime.broker) as health:
        read = send_status.read_status(db.query, send_id)
        if read is None:
            raise send_status.no_send(send_id)
        problem = health.read_problem(db.query, read.send)
        from newsletter.delivery.domain_pacing import slowed_report  # the domains slowed down after a 421

        paced = bool(runtime.settings.domain_rates) and read.send.status == SendStatus.SENDING
        slowed = slowed_report(health.client(), runtime.settings.domain_rates) if paced else None
        relays = None
        if len(runtime.settings.smtp_relays) > 1:  # each relay's share of the send, and its state now
            from newsletter.delivery.relay_state import relay_report

            key = send_status.send_key(read.send)
            relays = relay_report(health.client(), runtime.settings.smtp_relays, key, broker_error=health.broker_error)
    data = {**send_status.status_json(read.send, read.list_slug, read.counts, read.test), "problem": problem}
    if relays is not None:
        data["relays"] = [r.as_json() for r in relays]
    if as_json:
        print(json.dumps(data if slowed is None else {**data, "slowed_domains": [s.as_json() for s in slowed]}))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if key == "subject_test" and read.test is not None:
            table.add_row("subject test", read.test.line())
        elif value is not None and key != "relays":
            table.add_row(key, str(value))
    for relay in relays or ():
        table.add_row(f"relay {relay.name}", relay.describe())
    for domain in slowed or ():
        table.add_row(f"slowed {domain.domain}", domain.describe())
    out.print(table)


@app.command()
def report(
    send_id: int = typer.Argument(..., help="The send's id."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object (its keys are listed in README, 'Engagement reports')."
    ),
) -> None:
    """A send's report: delivered, failed, bounced, complaints, unsubscribes and, when its list tracks
    them, human and machine opens and clicks, rates, and each link's clicks."""
    from newsletter.engagement.report import send_report

    with runtime.reading() as session:
        made = send_report(session, send_id)
    if as_json:
        print(json.dumps(made.as_json()))
        return
    from rich.table import Table

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    table = Table(show_header=False, box=None)
    rows = [
        ("send", f"{made.send_id} to {made.list}: {made.subject}"),
        ("status", made.status),
        ("tracking", made.tracking),
        ("recipients", made.recipients),
        ("delivered", made.delivered),
        ("pending", made.pending),
        ("failed", made.failed),
        ("bounced", made.bounced),
        ("complaints", made.complaints),
        ("unsubscribes", made.unsubscribes),
    ]
    if made.tracking != "off":
        o, c = made.opens, made.clicks
        rows += [
            ("opens", f"{o.unique} unique, {o.total} in all ({rate(made.open_rate)} of delivered, an estimate)"),
            (
                "machine opens",
                f"{o.machine_unique} unique, {o.machine_total} in all (privacy proxies, prefetchers and scanners; not counted above)",
            ),
            ("clicks", f"{c.unique} unique, {c.total} in all ({rate(made.click_through_rate)} click-through)"),
            ("machine clicks", f"{c.machine_unique} unique, {c.machine_total} in all (scanners, not counted above)"),
            ("click-to-open", rate(made.click_to_open_rate)),
        ]
    for key, value in rows:
        table.add_row(key, str(value))
    out.print(table)
    if made.subject_test is not None:
        _print_subject_test(made.subject_test, rate)
    if made.tracking == "off":
        out.print(
            "Tracking was off for this send: no opens or clicks were counted (each list's choice: `lists update SLUG --tracking`)."
        )
        return
    links = Table("link", "unique", "clicks", "machine", box=None)
    for link in made.links:
        links.add_row(link.url, str(link.unique), str(link.total), str(link.machine))
    if made.links:
        out.print(links)
    from newsletter.engagement.report import ESTIMATE_NOTE

    out.print(ESTIMATE_NOTE)


def _print_subject_test(test: SubjectTestReport, rate: Callable[[float | None], str]) -> None:
    """A report's subject test: each subject's figures, then the decision and the figures it was made on."""
    out.print(f"Subject test ({test.share} % of the recipients, half each):")
    for v in test.variants:
        won = ", the winner" if test.winner == v.variant else ""
        out.print(
            f'  {v.variant}{won}: "{v.subject}": {v.recipients} recipients, {v.delivered} delivered; unique people: '
            f"{v.opens} opened ({rate(v.open_rate)}), {v.clicks} clicked ({rate(v.click_rate)})"
        )
    moment = test.decided_at.strftime("%Y-%m-%d %H:%M UTC") if test.decided_at else ""
    if test.state == "decided":
        by = "" if test.decided_by == "scheduler" else f" by {test.decided_by}"
        out.print(f"Decided{by} at {moment}: {test.reason} The winner went to the other {test.remainder}.")
        if test.decided_on is not None:
            then = "; ".join(
                f"{v.variant} {v.clicks} clicked and {v.opens} opened of {v.delivered}" for v in test.decided_on
            )
            out.print(f"The figures it was decided on: {then}.")
    elif test.state == "cancelled":
        out.print(f"The rest ({test.remainder}) did not get it: {test.reason} ({moment}).")
    elif test.decide_at is not None:
        out.print(
            f"Testing until {test.decide_at:%Y-%m-%d %H:%M} UTC; then the winning subject goes to {test.remainder} more."
        )


@app.command()
def decide(
    send_id: int = typer.Argument(..., help="The send's id."),
    winner: str | None = typer.Option(
        None, "--winner", metavar="A|B", help="Pick the winner yourself instead of by the figures so far."
    ),
) -> None:
    """Decide a send's subject test now, before its time: by the figures so far, or --winner; the rest gets it."""
    from newsletter.delivery import subject_tests
    from newsletter.delivery.send_queue import queue_batches

    chosen = subject_tests.parse_winner(winner)
    with runtime.transaction() as session:
        decided = subject_tests.decide_now(
            session, send_id, batch_size=runtime.settings.batch_size, by="cli", winner=chosen
        )
    queue_batches(runtime.tasks, send_id, decided.batches)  # QueueUnavailable: one error line
    out.print(decided.reason)
    if decided.batches:
        out.print(
            f"Send {send_id}: {decided.winner} goes to the other {decided.remainder} ({len(decided.batches)} batch(es) queued)."
        )
    elif decided.send_status == SendStatus.PAUSED:
        out.print(
            f"Send {send_id} is paused: {decided.winner} goes to the rest when you resume it (`newsletter sends resume {send_id}`)."
        )


@app.command("cancel-remainder")
def cancel_remainder(send_id: int = typer.Argument(..., help="The send's id.")) -> None:
    """Cancel the rest of a send's undecided subject test: only the test share gets the issue."""
    from newsletter.delivery import subject_tests

    with runtime.transaction() as session:
        count = subject_tests.cancel_rest(session, send_id, by="cli")
    out.print(
        f"Send {send_id}: the subject test's rest is cancelled; {count} deliver{'y' if count == 1 else 'ies'} "
        "will not be sent (the test share's go on)."
    )


@app.command("log")
def delivery_log(
    send_id: int = typer.Argument(..., help="The send's id."),
    status_filter: str | None = typer.Option(None, "--status", help=f"Only one of: {', '.join(DeliveryStatus)}."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout instead of a table."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """Each recipient's delivery: status, attempts, the SMTP server's last reply, Message-ID, time."""
    from newsletter.delivery import sending

    columns = sending.LOG_COLUMNS
    with runtime.transaction() as session:
        rows = sending.delivery_log(session, send_id, status=status_filter)
        if as_csv:
            from subscribers import csv_cells  # no cell starts a spreadsheet formula

            writer = csv_cells.writer(sys.stdout)
            writer.writerow(columns)
            for r in rows:
                writer.writerow(
                    [
                        r.delivery_id,
                        r.email,
                        r.status,
                        r.attempts,
                        r.smtp_code or "",
                        r.smtp_reply or "",
                        r.message_id or "",
                        _time(r.sent_at),
                        _time(r.updated_at),
                    ]
                )
            return
        table_columns = [
            Col("delivery_id", "id", keep=True, right=True),
            Col("email", keep=True),
            Col("status"),
            Col("attempts", "tries", right=True),
            Col("smtp_reply", "reply"),
            Col("message_id", "message-id"),
            Col("sent_at", "sent"),
        ]
        count = listing(out, table_columns, ({c: getattr(r, c) for c in columns} for r in rows), as_json=as_json)
    if not as_json:
        out.print(f"{count} deliver{'y' if count == 1 else 'ies'}.")


@app.command("scheduled")
def scheduled(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of objects instead of a table."),
) -> None:
    """List scheduled sends, soonest first."""
    from newsletter.delivery import scheduling

    with runtime.transaction() as session:
        rows = [
            {
                "id": send.id,
                "issue_id": send.issue_id,
                "list": mailing_list.slug,
                "audience": send.audience,
                "scheduled_at": send.scheduled_at,
                "subject": send.subject,
            }
            for send, mailing_list in scheduling.scheduled_sends(session)
        ]
    columns = [
        Col("id", keep=True, right=True),
        Col("issue_id", "issue", keep=True, right=True),
        Col("list", keep=True),
        Col("scheduled_at", "at (UTC)"),
        Col("subject"),
    ]
    listing(
        out,
        columns,
        rows,
        as_json=as_json,
        empty="No scheduled sends. Schedule one with: newsletter send ISSUE_ID --at 2026-12-07T08:00+01:00",
    )


@app.command()
def reschedule(
    send_id: int = typer.Argument(..., help="The scheduled send's id."),
    at: str = typer.Option(..., "--at", help="The new time, ISO 8601 with its offset."),
) -> None:
    """Move a scheduled send to another time (cancel it with `newsletter sends cancel ID`)."""
    from newsletter.delivery import scheduling

    when = scheduling.parse_time(at)
    with runtime.transaction() as session:
        scheduling.reschedule_send(session, send_id, when)
    out.print(f"Send {send_id} rescheduled for {when.isoformat(timespec='minutes')}.")


@app.command()
def pause(send_id: int = typer.Argument(..., help="The send's id.")) -> None:
    """Pause a send; workers stop within a second and keep their place."""
    from newsletter.delivery import sending

    with runtime.transaction() as session:
        sending.pause_send(session, send_id)
    out.print(f"Send {send_id} paused. Resume with: newsletter sends resume {send_id}")


@app.command()
def resume(send_id: int = typer.Argument(..., help="The send's id.")) -> None:
    """Resume a paused send where it stopped (also re-queues a sending one whose tasks were lost)."""
    from newsletter.delivery import sending
    from newsletter.delivery.send_queue import queue_resumed

    settings = runtime.settings
    with runtime.transaction() as session:
        send, batches = sending.resume_send(session, send_id, settings.batch_size)
    queue_resumed(runtime.tasks, send_id, sending.send_key(send), batches)  # QueueUnavailable: one error line
    out.print(f"Send {send_id} {send.status}: {len(batches)} batch(es) queued.")


@app.command()
def cancel(send_id: int = typer.Argument(..., help="The send's id.")) -> None:
    """Cancel a send: nothing more goes out; the rest is logged as cancelled."""
    from newsletter.delivery import sending

    with runtime.transaction() as session:
        was = sending.get_send(session, send_id).status
        count = sending.cancel_send(session, send_id)
    if was == SendStatus.SCHEDULED:
        out.print(f"Send {send_id} cancelled; it will not start.")
        return
    # Messages a worker had already handed to the SMTP server still count as sent in the log.
    out.print(
        f"Send {send_id} cancelled; {count} deliver{'y' if count == 1 else 'ies'} not yet handed to the SMTP "
        f"server will not be sent (a message in flight may still go out; `newsletter sends log {send_id}` tells)."
    )


@app.command("watch")
def watch_command(
    send_id: int = typer.Argument(..., help="The send's id."),
    wait_timeout: float | None = typer.Option(
        None,
        "--wait-timeout",
        min=0.1,
        metavar="SECONDS",
        help=f"Give up watching after this many seconds, exit {WAIT_TIMEOUT_EXIT}; the send goes on.",
    ),
) -> None:
    """Show a send's progress until it ends, and its problem when it has one; exit 1 if any delivery
    failed or it paused."""
    raise typer.Exit(watch(send_id, timeout=wait_timeout))


def scheduler(
    loglevel: str = typer.Option("INFO", "--loglevel", help="Celery log level."),
) -> None:
    """Run the scheduler (Celery beat): it starts due sends, plans weekly slots and sequence steps, decides subject tests.

    Run one per deployment, or two for availability: a send still starts only once.
    """
    import os

    from newsletter.worker import scheduler_tasks, tasks

    app_ = tasks.configure(runtime.settings)
    app_.conf.beat_schedule = scheduler_tasks.beat_schedule()
    err.print(f"Scheduler using broker {app_.conf.broker_url}; a worker (`newsletter worker`) runs what it schedules.")
    app_.start(
        argv=[
            "beat",
            f"--loglevel={loglevel}",
            "--scheduler",
            "celery.beat:Scheduler",
            "--pidfile=",
            f"--schedule={runtime.settings.var_dir}/beat-{os.getpid()}",
        ]
    )


def worker(
    concurrency: int = typer.Option(
        2, "--concurrency", "-c", help="Worker processes, each with its own SMTP connection."
    ),
    loglevel: str = typer.Option("INFO", "--loglevel", help="Celery log level."),
) -> None:
    """Run a Celery worker that delivers queued batches (Ctrl-C to stop)."""
    import os

    from newsletter.mail.outbound import Outbound
    from newsletter.worker import tasks

    outbound = Outbound.from_settings(runtime.settings)  # an unusable DKIM key stops the worker now, not every batch
    app_ = tasks.configure(runtime.settings)
    err.print(f"Worker using broker {app_.conf.broker_url} and SMTP {runtime.settings.smtp_names}")
    if outbound.signer is not None:
        err.print(
            f"Signing with DKIM: d={outbound.signer.domain} s={outbound.signer.selector} ({outbound.signer.key_bits}-bit RSA)"
        )
    app_.worker_main(
        argv=[
            "worker",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            "-Q",
            tasks.QUEUE,
            "-n",
            f"newsletter-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""
