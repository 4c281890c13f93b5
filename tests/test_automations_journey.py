"""Welcome, sequence and goodbye emails end to end: real `newsletter worker` processes, a real
`newsletter scheduler`, Redis, the capture SMTP server, the subscriber web app, the CLI; on SQLite
and PostgreSQL.

The clock the tests move is the scheduler's own planning function
(``subscribers.automation_mails.plan_due_steps``), called with a later ``now`` while the real
workers deliver what it queues, exactly as the tick calls it with the clock's time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import partial
from typing import Any

import pytest

from newsletter.config import Settings
from newsletter.delivery.send_queue import queue_automation_batches
from newsletter.runtime import Runtime
from newsletter.store.models import utcnow
from subscribers import automation_mails
from subscribers.bounces import record_bounce
from tests.sendkit import Newsroom
from tests.textkit import body_text, must_match

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CONFIRM_SUBJECT = "Confirm your subscription to Info War Weekly"
WELCOME_SUBJECT = "Welcome to Info War Weekly"
GOODBYE_SUBJECT = "You have left Info War Weekly"
CONFIRM_LINK = re.compile(r"https://news\.example\.org/confirm/(v1\.\d+\.\d+\.\d+\.[A-Za-z0-9_-]+)")
UNSUBSCRIBE_LINK = re.compile(r"https://news\.example\.org/unsubscribe/(v1\.\d+\.\d+\.\d+\.[A-Za-z0-9_-]+)")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def write_lessons(room: Newsroom) -> list[str]:
    """Three issues of weekly, "Lesson 1" to "Lesson 3"; returns their ids."""
    ids = []
    for n in (1, 2, 3):
        path = room.tmp / f"lesson-{n}.md"
        path.write_text(
            f'---\nsubject: "Lesson {n}"\n---\nHello *|NAME:there|*,\n\n# Lesson {n}\n\n'
            f"Read [the notes](https://example.org/lessons/{n}).\n",
            encoding="utf-8",
        )
        ids.append(room.cli("issues", "create", "weekly", str(path)).stdout.strip().splitlines()[-1])
    return ids


def mails(room: Newsroom) -> dict[str, list[EmailMessage]]:
    """What each address received, in the order it arrived."""
    got: dict[str, list[EmailMessage]] = defaultdict(list)
    for m in list(room.capture.messages):
        for rcpt in m.rcpt_tos:
            got[rcpt].append(message_from_bytes(m.data, policy=policy.default))
    return got


def subjects(room: Newsroom) -> dict[str, list[str]]:
    return {a: [str(m["Subject"]) for m in ms] for a, ms in mails(room).items()}


class Clock:
    """The scheduler's planning of due steps, at a time the test chooses; the real workers deliver it."""

    def __init__(self, settings: Settings) -> None:
        self.runtime = Runtime(settings)
        self.batch_size = settings.batch_size

    def tick(self, at: datetime) -> int:
        with self.runtime.transaction() as session:
            batches = automation_mails.plan_due_steps(session, at, self.batch_size)
        queue_automation_batches(self.runtime.tasks, batches)
        return sum(1 for _ in batches)

    def close(self) -> None:
        self.runtime.engine.dispose()


def automations_json(room: Newsroom) -> dict[str, Any]:
    return json.loads(room.cli("automations", "show", "weekly", "--json").stdout)


def log_json(room: Newsroom) -> list[dict[str, Any]]:
    return json.loads(room.cli("automations", "log", "weekly", "--limit", "1000", "--json").stdout)


def _scheduler(room: Newsroom) -> subprocess.Popen[bytes]:
    log = open(room.tmp / "scheduler.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "scheduler"],
        env=room.cli.env,
        cwd=room.cli.cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_a_reader_is_welcomed_once_gets_each_step_in_order_and_is_seen_off_when_leaving(newsroom_any_db, database_url):
    from fastapi.testclient import TestClient

    from newsletter.http.app import create_app

    room, cli = newsroom_any_db, newsroom_any_db.cli
    cli("lists", "create", "weekly", "--name", "Info War Weekly", "--from-email", "news@example.org")
    lesson1, lesson2, lesson3 = write_lessons(room)
    assert "on, the shipped text" in cli("automations", "welcome", "weekly", "--on").stdout
    for issue_id, offset in ((lesson2, "3"), (lesson1, "0"), (lesson3, "7")):
        cli("automations", "add-step", "weekly", issue_id, "--day", offset)
    cli("automations", "goodbye", "weekly", "--on")
    room.start_worker()
    scheduler = _scheduler(room)  # the real tick, on the real clock: it plans the day-0 step
    settings = Settings.from_environ(room.cli.env)
    clock = Clock(settings)
    readers = {"ann@example.com": "Ann", "bob@example.com": "Bob", "cid@example.com": "Cid"}
    try:
        with TestClient(create_app(settings), base_url="https://news.example.org") as web:
            for address, name in readers.items():
                asked = web.post("/subscribe/weekly", data={"email": address, "name": name})
                assert asked.status_code == 200, asked.text
            wait_for(lambda: all(CONFIRM_SUBJECT in subjects(room).get(a, []) for a in readers), "confirmations")
            tokens = {a: must_match(CONFIRM_LINK.search(body_text(mails(room)[a][0]))).group(1) for a in readers}
            for address in readers:
                confirmed = web.post(f"/confirm/{tokens[address]}")
                assert confirmed.status_code == 200, confirmed.text
            assert web.post(f"/confirm/{tokens['ann@example.com']}").status_code == 200  # the link followed twice

            # Added by an editor: no welcome (the default welcomes only the opt-in link), but the steps, yes.
            cli("subscribers", "add", "weekly", "dee@example.com", "--confirmed")

            def lessons_done(n: int, who: list[str]) -> bool:
                got = subjects(room)
                return all(f"Lesson {n}" in got.get(a, []) for a in who)

            everyone = [*readers, "dee@example.com"]
            wait_for(lambda: lessons_done(1, everyone), "the welcome, then the day-0 step, through the real scheduler")
            welcome = mails(room)["ann@example.com"][1]
            assert welcome["Subject"] == WELCOME_SUBJECT
            text = body_text(welcome)
            assert "Hello Ann," in text and "Thank you for confirming your subscription" in text
            assert welcome["List-Unsubscribe"] and "https://news.example.org/archive/weekly" in text

            # Cid leaves with the one-click link of the step's email: the goodbye goes once.
            step_mail = mails(room)["cid@example.com"][-1]
            token = must_match(UNSUBSCRIBE_LINK.search(body_text(step_mail))).group(1)
            left = web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
            assert left.status_code == 200
            assert web.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
            wait_for(lambda: GOODBYE_SUBJECT in subjects(room).get("cid@example.com", []), "cid's goodbye")
            goodbye = mails(room)["cid@example.com"][-1]
            assert "You will not receive Info War Weekly any more" in body_text(goodbye)
        # Dee's address is reported as spam: she leaves the list, suppressed, and is not seen off.
        with clock.runtime.transaction() as session:
            record_bounce(
                session,
                email="dee@example.com",
                kind="complaint",
                source="webhook",
                list_id=None,
                soft_limit=3,
                soft_days=30,
                proof="a test",
            )

        # The clock moves: three days later, then seven; each tick run twice.
        start = utcnow()
        for day, lesson in ((3, 2), (8, 3)):
            for _ in range(2):
                clock.tick(start + timedelta(days=day, minutes=1))
            wait_for(partial(lessons_done, lesson, ["ann@example.com", "bob@example.com"]), f"lesson {lesson}")
        time.sleep(2)  # room for a duplicate or a stray step to show up, if there were one
    finally:
        scheduler.terminate()
        scheduler.wait(15)
        clock.close()

    got = subjects(room)
    for address in ("ann@example.com", "bob@example.com"):
        assert got[address] == [CONFIRM_SUBJECT, WELCOME_SUBJECT, "Lesson 1", "Lesson 2", "Lesson 3"], got
    assert got["cid@example.com"] == [CONFIRM_SUBJECT, WELCOME_SUBJECT, "Lesson 1", GOODBYE_SUBJECT], got
    assert got["dee@example.com"] == ["Lesson 1"], got

    shown = automations_json(room)
    assert (shown["welcome"]["sent"], shown["goodbye"]["sent"]) == (3, 1)
    assert [(s["day"], s["sent"], s["pending"]) for s in shown["steps"]] == [(0, 4, 0), (3, 2, 0), (7, 2, 0)]
    log = log_json(room)
    assert len(log) == 3 + 4 + 2 + 2 + 1 and all(r["status"] == "sent" for r in log)
    captured = {(m.rcpt_tos[0], m.subject): m for m in room.capture.messages}
    for row in log:
        assert row["smtp_code"] == 250 and row["smtp_reply"] == "2.0.0 OK: captured" and row["sent_at"]
        subject = {"welcome": WELCOME_SUBJECT, "goodbye": GOODBYE_SUBJECT}.get(row["what"], row["subject"])
        message = captured[(row["email"], subject)]
        assert message_from_bytes(message.data, policy=policy.default)["Message-ID"] == row["message_id"]
    table = cli("automations", "log", "weekly", "--kind", "goodbye").stdout
    assert "cid@example.com" in table and "2.0.0 OK: captured" in table
    scheduled = (room.tmp / "scheduler.log").read_text()
    assert "beat: Starting" in scheduled


def test_a_worker_killed_mid_step_and_ticks_run_at_once_neither_skip_nor_repeat_a_step(newsroom_any_db):
    room, cli = newsroom_any_db, newsroom_any_db.cli
    cli("lists", "create", "weekly", "--name", "Info War Weekly", "--from-email", "news@example.org")
    lesson1, *_ = write_lessons(room)
    cli("automations", "add-step", "weekly", lesson1, "--day", "2")
    addresses = [f"reader{i:03d}@example.com" for i in range(150)]
    people = room.tmp / "people.csv"
    people.write_text("email,name\n" + "".join(f"{a},Reader {i}\n" for i, a in enumerate(addresses)))
    cli("subscribers", "import", "weekly", str(people), "--confirmed")
    first = room.start_worker(concurrency=2, NEWSLETTER_SEND_RATE="40")  # slow: the kill must land mid-step
    clock = Clock(Settings.from_environ(room.cli.env))
    try:
        assert clock.tick(utcnow() + timedelta(days=1)) == 0  # not due yet
        later = utcnow() + timedelta(days=2, minutes=1)
        gate = threading.Barrier(3)
        queued: list[int] = []

        def tick() -> None:
            gate.wait()
            queued.append(clock.tick(later))

        ticks = [threading.Thread(target=tick) for _ in range(3)]
        for t in ticks:
            t.start()
        for t in ticks:
            t.join()
        assert sum(queued) == 6  # 150 rows in batches of 25, written by one of the three ticks
        room.wait_received(30)
        first.kill9()
        assert len(room.capture.messages) < 150
        room.start_worker(concurrency=2)
        wait_for(lambda: automations_json(room)["steps"][0]["sent"] == 150, "every step recorded sent", timeout=180)
        assert clock.tick(later) == 0 and clock.tick(later + timedelta(days=30)) == 0  # nothing due twice
        time.sleep(2)  # room for a duplicate to show up, if there were one
    finally:
        clock.close()
    received = Counter(r for m in room.capture.messages for r in m.rcpt_tos)
    assert set(received) == set(addresses)  # nobody skipped
    duplicates = sum(n - 1 for n in received.values())
    # As for a send: at most the one message each killed process had in flight, with the same Message-ID.
    assert duplicates <= 2, received.most_common(3)
    ids: dict[str, set[str]] = defaultdict(set)
    for m in room.capture.messages:
        ids[m.rcpt_tos[0]].add(str(message_from_bytes(m.data, policy=policy.default)["Message-ID"]))
    log = {r["email"]: r for r in log_json(room)}
    assert len(log) == 150
    for address in addresses:
        assert ids[address] == {log[address]["message_id"]}, (address, ids[address], log[address])
        assert log[address]["status"] == "sent"
