"""Subject tests end to end: `newsletter send --subject-test`, a real worker and SMTP capture, real clicks on a
real `newsletter web`, and the scheduler's tick run as its own process with a clock the test sets.

The test share gets each subject exactly (half each), the rest nothing until the tick decides; clicks on B
make B win and the rest get B, each address exactly one copy; a tick killed while deciding (before its
commit, or after it and before queueing the rest) neither loses the rest nor sends it twice.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta
from email import message_from_bytes, policy

import httpx
import pytest
from sqlalchemy import select

from newsletter.store import db
from newsletter.store.models import Delivery
from tests.sendkit import Newsroom
from tests.test_web_journey import free_port, start_web

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
ISSUE_SUBJECT = "This Week in Info War: Qualified Support in Moscow for Korean Summit"
B_SUBJECT = "Moscow's quiet support, in one read"

# The scheduler's tick as `newsletter scheduler` has a worker run it, in a process of its own, at the time given.
# (The tick's one-second lock is lifted first: the test runs ticks back to back.) With "crash-before-commit" the
# process dies (as kill -9 would) after it claimed the decision and before its transaction commits; with
# "crash-before-queueing", after the commit and before the rest's batches reach the broker.
TICK = """
import os, sys
from datetime import datetime
from newsletter.delivery import subject_tests
from newsletter.worker import scheduler_tasks
from newsletter.worker.app import state

s = state()
s.control.redis.delete("newsletter:lock:scheduler-tick")
if sys.argv[2] == "crash-before-commit":
    subject_tests.pending_batches = lambda *args, **kwargs: os._exit(9)
elif sys.argv[2] == "crash-before-queueing":
    class Dying:
        def send_tasks(self, *args, **kwargs):
            os._exit(9)
    s.__dict__["queue"] = Dying()
scheduler_tasks.run_tick(s, now=datetime.fromisoformat(sys.argv[1]))
"""


def _tick(room: Newsroom, now: datetime, how: str = "normal") -> int:
    proc = subprocess.run(
        [sys.executable, "-c", TICK, now.isoformat(), how],
        env=room.cli.env,
        cwd=room.cli.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 9), proc.stderr
    return proc.returncode


def _subjects(room: Newsroom) -> dict[str, list[str]]:
    """Each address's subjects, one per copy received."""
    got: dict[str, list[str]] = {}
    for message in room.capture.messages:
        parsed = message_from_bytes(message.data, policy=policy.default)
        for rcpt in message.rcpt_tos:
            got.setdefault(rcpt, []).append(str(parsed["Subject"]))
    return got


def _variants(room: Newsroom, send_id: str) -> dict[str, int | None]:
    """Each address's variant in the send's log, read from the database."""
    engine = db.make_engine(room.cli.env["NEWSLETTER_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Delivery.email, Delivery.variant).where(Delivery.send_id == int(send_id)))
            return {email: variant for email, variant in rows}
    finally:
        engine.dispose()


def _wait(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: still not so after {timeout} s")


def _started(room: Newsroom, send_id: str) -> datetime:
    return datetime.fromisoformat(room.status(send_id)["started_at"])


def test_clicks_on_b_make_b_win_and_the_rest_gets_b_once_after_the_tick_decides(newsroom_any_db: Newsroom):
    room = newsroom_any_db
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    addresses = room.setup_list(61)
    issue_id = room.create_issue()

    refused = room.cli("send", issue_id, "--subject-test", B_SUBJECT, check=False)
    assert refused.returncode == 1
    assert "weekly has tracking off" in refused.stderr
    assert "`newsletter lists update weekly --tracking anonymous`" in refused.stderr
    assert "No sends yet" in room.cli("sends", "ls").stdout  # nothing stored

    room.cli("lists", "update", "weekly", "--tracking", "anonymous")
    room.start_worker(concurrency=1)
    sent = room.cli("send", issue_id, "--subject-test", B_SUBJECT, "--test-share", "20", "--decide-after", "2h")
    send_id = sent.stdout.strip().splitlines()[-1]
    # 20 % of 61 is 12.2: 12 in the test, 6 each; 49 wait for the winner.
    assert "Subject test: 6 get A" in sent.stderr and "and 6 get B" in sent.stderr
    assert "goes to the other 49" in sent.stderr
    _wait(lambda: room.status(send_id)["sent"] == 12, "the test share sent")
    status = room.status(send_id)
    assert (status["status"], status["pending"], status["problem"]) == ("sending", 49, None)
    assert status["subject_test"]["state"] == "testing"
    assert re.search(
        r"testing until \d\d:\d\d UTC .*6 got A and 6 got B; then the winning subject goes to 49 more",
        status["subject_test"]["line"],
    )
    room.wait_received(12)
    subjects = _subjects(room)
    variants = _variants(room, send_id)
    assert len(subjects) == 12 and all(len(s) == 1 for s in subjects.values())
    a_readers = sorted(a for a, s in subjects.items() if s == [ISSUE_SUBJECT])
    b_readers = sorted(a for a, s in subjects.items() if s == [B_SUBJECT])
    assert len(a_readers) == 6 and len(b_readers) == 6
    assert {a: variants[a] for a in a_readers} == dict.fromkeys(a_readers, 1)  # each got the subject its row says
    assert {a: variants[a] for a in b_readers} == dict.fromkeys(b_readers, 2)
    assert sum(1 for v in variants.values() if v is None) == 49
    shown = room.cli("sends", "status", send_id).stdout
    assert "subject test" in shown and "49 more" in shown

    web = start_web(room.cli.env, room.tmp, port)
    try:
        with httpx.Client(follow_redirects=False, timeout=10) as http:

            def links(address: str) -> tuple[list[str], str]:
                html = room.parsed(address).get_body(("html",)).get_content()  # type: ignore[union-attr]
                clicks = list(dict.fromkeys(re.findall(rf'href="({re.escape(base)}/t/c/[^"]+)"', html)))
                (image,) = re.findall(rf'<img src="({re.escape(base)}/t/o/[^"]+)"', html)
                return clicks, image

            for reader in a_readers[:4]:  # A is opened more ...
                assert http.get(links(reader)[1], headers={"User-Agent": CHROME}).status_code == 200
            for reader in b_readers[:2]:
                assert http.get(links(reader)[1], headers={"User-Agent": CHROME}).status_code == 200
            assert http.get(links(a_readers[0])[0][0], headers={"User-Agent": CHROME}).status_code == 302
            for reader in b_readers[:3]:  # ... but B is clicked by more people
                assert http.get(links(reader)[0][0], headers={"User-Agent": CHROME}).status_code == 302
            # A scanner following every link of an A copy at once is no clicker of A.
            for link in links(a_readers[5])[0][:3]:
                http.get(link, headers={"User-Agent": CHROME})

        def counted() -> dict | None:
            report = json.loads(room.cli("sends", "report", send_id, "--json").stdout)
            test = report["subject_test"]
            figures = [(v["opens"], v["clicks"]) for v in test["variants"]]
            return test if figures == [(4, 1), (2, 3)] else None

        test = _wait(counted, "the opens and clicks recorded")
        assert [v["recipients"] for v in test["variants"]] == [6, 6]
        assert [v["subject"] for v in test["variants"]] == [ISSUE_SUBJECT, B_SUBJECT]
        assert test["state"] == "testing" and test["winner"] is None

        started = _started(room, send_id)
        assert _tick(room, started + timedelta(hours=1)) == 0  # not yet: nothing decided, nothing released
        assert room.status(send_id)["subject_test"]["state"] == "testing"
        assert _tick(room, started + timedelta(hours=2, seconds=5)) == 0
        decided = room.status(send_id)["subject_test"]
        assert (decided["state"], decided["winner"], decided["decided_by"]) == ("decided", "B", "scheduler")
        assert decided["reason"] == (
            "B won on unique human clicks: A 1 of 6 (16.7%), B 3 of 6 (50.0%) of the copies delivered clicked."
        )
        assert decided["line"].startswith("decided at ") and "B won; it goes to the other 49" in decided["line"]
        final = room.wait_status(send_id)
        assert (final["sent"], final["total"], final["pending"]) == (61, 61, 0)
        room.wait_received(61)
        assert _tick(room, started + timedelta(hours=3)) == 0  # a later tick finds nothing to decide
        time.sleep(2)  # room for a duplicate to show up, if there were one
        subjects = _subjects(room)
        assert {a: len(s) for a, s in subjects.items()} == dict.fromkeys(addresses, 1)  # everyone exactly once
        rest = [a for a in addresses if variants[a] is None]
        assert {subjects[a][0] for a in rest} == {B_SUBJECT}  # the rest got the winner
        assert room.status(send_id)["subject_test"]["decided_at"] == decided["decided_at"]

        report = json.loads(room.cli("sends", "report", send_id, "--json").stdout)["subject_test"]
        assert report["winner"] == "B" and report["decided_on"][1]["clicks"] == 3
        text = room.cli("sends", "report", send_id).stdout
        assert "B, the winner" in text and "Decided at" in text and "went to the other 49" in text
    finally:
        web.stop()


def test_a_tick_killed_while_deciding_neither_loses_the_rest_nor_sends_it_twice(newsroom_any_db: Newsroom):
    room = newsroom_any_db
    addresses = room.setup_list(40)
    room.cli("lists", "update", "weekly", "--tracking", "individual")
    issue_id = room.create_issue()
    room.start_worker(concurrency=2)
    send_id = room.send(issue_id, "--subject-test", B_SUBJECT, "--test-share", "50", "--decide-after", "30m")
    _wait(lambda: room.status(send_id)["sent"] == 20, "the test share sent")
    due = _started(room, send_id) + timedelta(minutes=31)

    # Killed after claiming the decision, before committing it: nothing happened.
    assert _tick(room, due, "crash-before-commit") == 9
    status = room.status(send_id)
    assert status["subject_test"]["state"] == "testing" and status["pending"] == 20

    # Killed after committing, before the rest's batches reached the broker: decided for good (no clicks,
    # no opens: A, by default), and a worker's reconciler queues the rest by itself.
    assert _tick(room, due, "crash-before-queueing") == 9
    decided = room.status(send_id)["subject_test"]
    assert (decided["state"], decided["winner"]) == ("decided", "A")
    assert "A, the issue's own subject, goes to the rest" in decided["reason"]
    final = room.wait_status(send_id)
    assert (final["sent"], final["pending"]) == (40, 0)

    # Run again: the test is decided already, so this tick decides and queues nothing.
    assert _tick(room, due + timedelta(minutes=1)) == 0
    room.wait_received(40)
    time.sleep(2)  # room for a duplicate to show up, if there were one
    subjects = _subjects(room)
    assert {a: len(s) for a, s in subjects.items()} == dict.fromkeys(addresses, 1)
    variants = _variants(room, send_id)
    assert sorted(v or 0 for v in variants.values()) == [0] * 20 + [1] * 10 + [2] * 10
    assert {subjects[a][0] for a, v in variants.items() if v != 2} == {ISSUE_SUBJECT}
    assert room.status(send_id)["subject_test"]["decided_at"] == decided["decided_at"]
    logs = "".join(w.log.read_text() for w in room.workers)
    assert "re-queueing" in logs  # the rest came back through the reconciler


def test_an_editor_decides_early_or_cancels_the_rest_from_the_cli(newsroom: Newsroom):
    room = newsroom
    room.setup_list(20)
    room.cli("lists", "update", "weekly", "--tracking", "anonymous")
    first, second = room.create_issue(), room.create_issue()
    room.start_worker(concurrency=1)
    early = room.send(first, "--subject-test", B_SUBJECT, "--test-share", "50", "--decide-after", "1d")
    cancelled = room.send(second, "--subject-test", B_SUBJECT, "--test-share", "50")
    _wait(lambda: room.status(early)["sent"] == 10 and room.status(cancelled)["sent"] == 10, "both test shares sent")

    bad = room.cli("sends", "decide", early, "--winner", "c", check=False)
    assert bad.returncode == 1 and "--winner: the winner is A or B" in bad.stderr
    decided = room.cli("sends", "decide", early, "--winner", "b")
    assert "B chosen by cli" in decided.stdout and "B goes to the other 10" in decided.stdout
    assert room.wait_status(early)["sent"] == 20
    again = room.cli("sends", "decide", early, check=False)
    assert again.returncode == 1 and "decided already (B won)" in again.stderr

    stopped = room.cli("sends", "cancel-remainder", cancelled)
    assert "10 deliveries will not be sent" in stopped.stdout
    final = room.wait_status(cancelled)
    assert (final["sent"], final["cancelled"], final["subject_test"]["state"]) == (10, 10, "cancelled")
    assert "cancelled by cli" in final["subject_test"]["line"]
    room.wait_received(30)
    time.sleep(2)
    assert sum(room.received().values()) == 30
