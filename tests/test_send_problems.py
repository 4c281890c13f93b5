"""A stalled send says why: `sends status --json` carries `problem`, and so do `send --wait`,
`sends watch`, the API, the admin send page and the dashboard.

Real processes: the CLI, `newsletter worker`, Redis, the capture SMTP server (started late, on
the port the worker was told to use, for an SMTP outage), both databases, `newsletter web` and
Chromium. NEWSLETTER_STALL_SECONDS is lowered so that "nobody took the work" shows in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from newsletter.delivery.send_health import Health, SendState, SmtpTrouble, WorkerBeat, send_problem
from newsletter.devtools.smtp_capture import CaptureServer
from tests.apikit import (
    Api,
    api_with_broker,  # noqa: F401  (fixture)
)
from tests.conftest import Cli, clean_environ
from tests.sendkit import Newsroom

NOW = 1_800_000_000.0
BEAT = WorkerBeat(name="host:1", host="host", pid=1, smtp="127.0.0.1:25", started=NOW - 60, at=NOW - 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(room, send_id: str, check: Callable[[dict], bool], what: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = room.status(send_id)
        if check(status):
            return status
        time.sleep(0.3)
    logs = "\n".join(w.log.read_text()[-3000:] for w in room.workers)
    raise AssertionError(f"send {send_id}: no {what} after {timeout}s; last status {status}\n{logs}")


# --- the sentence, from plain facts ----------------------------------------------------------------


def test_a_moving_or_finished_send_has_no_problem():
    moving = SendState(1, "sending", started_at=NOW - 600, waiting=True, held_until=NOW + 20)
    assert send_problem(moving, Health("redis://r"), now=NOW, stall_seconds=30) is None
    recent = SendState(1, "sending", started_at=NOW - 600, waiting=True)
    assert send_problem(recent, Health("redis://r", last_progress=NOW - 5), now=NOW, stall_seconds=30) is None
    retrying_later = SendState(1, "sending", started_at=NOW - 600, waiting=False)  # only retries, not yet due
    assert send_problem(retrying_later, Health("redis://r"), now=NOW, stall_seconds=30) is None
    for status in ("finished", "cancelled"):
        assert send_problem(SendState(1, status), None, now=NOW, stall_seconds=30) is None
    paused_by_hand = SendState(1, "paused", status_reason="paused by an editor")
    assert send_problem(paused_by_hand, None, now=NOW, stall_seconds=30) is None


def test_no_worker_and_idle_workers_are_told_apart():
    stuck = SendState(7, "sending", started_at=NOW - 100, waiting=True, held_until=NOW - 50)
    alone = send_problem(stuck, Health("redis://r", last_progress=NOW - 45), now=NOW, stall_seconds=30)
    assert alone is not None and alone.startswith("No worker has taken this send's work for 45 s and none is running")
    assert "`newsletter worker`" in alone
    busy = send_problem(
        stuck, Health("redis://r", workers=(BEAT, BEAT), queued=12, last_progress=NOW - 45), now=NOW, stall_seconds=30
    )
    assert busy is not None and busy.startswith("2 workers are running but none has taken this send's work for 45 s")
    assert "12 task(s) are waiting in the queue" in busy
    # A retry that came due 40 s ago and that nobody took: stalled since it came due.
    retry = SendState(7, "sending", started_at=NOW - 3600, waiting=True, waiting_since=NOW - 40)
    late = send_problem(retry, Health("redis://r", last_progress=NOW - 3000), now=NOW, stall_seconds=30)
    assert late is not None and "for 40 s" in late
    assert send_problem(retry, Health("redis://r", last_progress=NOW - 3000), now=NOW, stall_seconds=60) is None


def test_a_worker_holding_the_work_with_nothing_going_out_is_not_called_moving():
    # A worker claimed the rows (its claim is live) but the SMTP server does not answer: no progress for 45 s.
    hung = SendState(7, "sending", started_at=NOW - 100, waiting=True, held_until=NOW + 20)
    problem = send_problem(
        hung,
        Health("redis://r", workers=(BEAT,), last_progress=NOW - 45),
        now=NOW,
        stall_seconds=30,
        smtp="the SMTP server 127.0.0.1:2527",
    )
    assert problem is not None and problem.startswith(
        "A worker holds this send's next messages but none has gone out for 45 s: the SMTP server 127.0.0.1:2527 "
        "may not be answering"
    )
    # The same claim with a message out 5 s ago: moving.
    assert (
        send_problem(hung, Health("redis://r", workers=(BEAT,), last_progress=NOW - 5), now=NOW, stall_seconds=30)
        is None
    )


def test_smtp_trouble_names_the_server_the_error_and_the_next_try():
    trouble = SmtpTrouble(
        "mail.example.org:587",
        "cannot connect to SMTP server mail.example.org:587: Connection refused",
        at=NOW - 20,
        next_try=NOW + 40,
    )
    state = SendState(3, "sending", started_at=NOW - 600, waiting=False)
    problem = send_problem(state, Health("redis://r", workers=(BEAT,), trouble=trouble), now=NOW, stall_seconds=30)
    assert problem is not None
    assert problem.startswith("The SMTP server mail.example.org:587 cannot be reached (Connection refused)")
    assert "the next try is at" in problem and "(in 40 s)" in problem and "continues by itself" in problem
    # Its next try long overdue and no worker left: the missing worker is the news.
    dead = SendState(3, "sending", started_at=NOW - 600, waiting=True, waiting_since=NOW - 200)
    gone = dataclasses.replace(trouble, next_try=NOW - 200)
    problem = send_problem(dead, Health("redis://r", trouble=gone), now=NOW, stall_seconds=30)
    assert problem is not None and problem.startswith("No worker has taken")


def test_a_send_paused_for_errors_quotes_the_last_replies():
    state = SendState(
        9,
        "paused",
        status_reason="paused automatically: 30 of 60 attempts failed (threshold 20%); last error: x",
        last_replies=(
            "550 5.7.1 Blocked (in reply to RCPT TO command)",
            "451 4.3.0 Try later (in reply to RCPT TO command)",
        ),
    )
    problem = send_problem(state, None, now=NOW, stall_seconds=30)
    assert problem is not None
    assert "paused itself because too many deliveries failed (30 of 60 attempts failed)" in problem
    assert '"550 5.7.1 Blocked (in reply to RCPT TO command)"; "451 4.3.0 Try later' in problem
    assert "`newsletter sends resume 9`" in problem


def test_the_broker_and_an_overdue_scheduled_send():
    down = Health("redis://127.0.0.1:1/0", broker_error="Connection refused")
    problem = send_problem(SendState(2, "sending", started_at=NOW), down, now=NOW, stall_seconds=30)
    assert problem == (
        "The broker redis://127.0.0.1:1/0 cannot be reached (Connection refused), so no worker can take this send's "
        "work: check that it is running; the send continues by itself once it is back."
    )
    overdue = SendState(4, "scheduled", scheduled_at=NOW - 120)
    problem = send_problem(overdue, Health("redis://r"), now=NOW, stall_seconds=30)
    assert problem is not None and "has not started: no worker is running" in problem
    assert send_problem(SendState(4, "scheduled", scheduled_at=NOW + 60), None, now=NOW, stall_seconds=30) is None


def test_the_worker_queue_name_matches():
    from newsletter.delivery import send_health
    from newsletter.worker import tasks

    assert send_health.QUEUE == tasks.QUEUE


# --- what workers leave in Redis -----------------------------------------------------------------


@pytest.mark.redis
def test_smtp_trouble_keeps_its_first_moment_and_the_next_accepted_message_clears_it(redis_url):
    import redis

    from newsletter.delivery.send_control import SendControl
    from newsletter.delivery.send_health import record_smtp_trouble, smtp_trouble

    client = redis.Redis.from_url(redis_url)
    assert smtp_trouble(client, "5.abc") is None
    record_smtp_trouble(client, "5.abc", where="mail:25", error="refused", retry_in=10, now=100.0)
    record_smtp_trouble(client, "5.abc", where="mail:25", error="timed out", retry_in=20, now=130.0)
    assert smtp_trouble(client, "5.abc") == SmtpTrouble("mail:25", "timed out", at=130.0, next_try=150.0, since=100.0)
    control = SendControl(client)
    control.count_attempts("5.abc", 3, 3)  # only failures: the trouble stays
    assert smtp_trouble(client, "5.abc") is not None
    control.count_attempts("5.abc", 3, 2)  # one message went through
    assert smtp_trouble(client, "5.abc") is None
    assert float(client.hget("newsletter:stats:5.abc", "at") or 0) > 0  # the last progress, for the stall clock


@pytest.mark.redis
def test_heartbeats_come_and_go(redis_url):
    import redis

    from newsletter.delivery.send_health import live_workers, publish_heartbeat, withdraw_heartbeat

    client = redis.Redis.from_url(redis_url)
    assert live_workers(client) == []
    publish_heartbeat(client, BEAT)
    other = dataclasses.replace(BEAT, name="other:2", host="other", pid=2)
    publish_heartbeat(client, other)
    assert sorted(b.name for b in live_workers(client)) == ["host:1", "other:2"]
    assert 0 < client.ttl("newsletter:worker:host:1") <= 15
    withdraw_heartbeat(client, "host:1")
    client.delete("newsletter:worker:other:2")  # as if its TTL ran out
    assert live_workers(client) == [] and client.smembers("newsletter:workers") == set()


# --- the real thing ----------------------------------------------------------------------------


def test_no_worker_is_named_then_a_late_worker_delivers_each_copy_once(newsroom_any_db):
    room = newsroom_any_db
    addresses = room.setup_list(40)
    issue_id = room.create_issue()
    room.cli.env["NEWSLETTER_STALL_SECONDS"] = "2"
    send_id = room.send(issue_id)
    # Below the threshold nothing is said ...
    patient = Cli(env={**room.cli.env, "NEWSLETTER_STALL_SECONDS": "3600"}, cwd=room.cli.cwd)
    assert json.loads(patient("sends", "status", send_id, "--json").stdout)["problem"] is None
    # ... past it, the missing worker is named, with the command that starts one.
    stalled = wait_for(room, send_id, lambda s: s["problem"] is not None, "problem")
    assert stalled["status"] == "sending" and stalled["pending"] == 40
    assert stalled["problem"].startswith("No worker has taken this send's work for ")
    assert "none is running: start one with `newsletter worker`" in stalled["problem"]
    table = room.cli("sends", "status", send_id).stdout
    assert "problem" in table and "No worker has taken" in table

    room.start_worker(concurrency=1, NEWSLETTER_SEND_RATE="10")
    moving = wait_for(room, send_id, lambda s: s["sent"] > 0 or s["status"] == "finished", "progress")
    if moving["status"] == "sending":
        assert moving["problem"] is None
    final = room.wait_status(send_id)
    assert final["problem"] is None and (final["sent"], final["failed"]) == (40, 0)
    room.wait_received(40)
    assert room.received() == {a: 1 for a in addresses}


def test_an_smtp_outage_is_named_and_the_send_resumes_by_itself(newsroom_any_db):
    room = newsroom_any_db
    port = free_port()  # nothing listens here yet
    room.cli.env["NEWSLETTER_SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    addresses = room.setup_list(60)
    issue_id = room.create_issue()
    room.start_worker(concurrency=2)
    send_id = room.send(issue_id)
    down = wait_for(room, send_id, lambda s: s["problem"] is not None, "problem")
    problem = down["problem"]
    assert problem.startswith(f"The SMTP server 127.0.0.1:{port} cannot be reached (Connection refused)"), problem
    assert "next try" in problem and "continues by itself once the server answers" in problem
    # Waiting for the server costs no recipient its delivery and does not pause the send.
    time.sleep(3)
    still = room.status(send_id)
    assert still["status"] == "sending" and still["failed"] == 0 and still["sent"] == 0
    assert "cannot be reached" in still["problem"]

    server = CaptureServer(port=port)
    server.start()
    try:
        room.capture = server
        final = room.wait_status(send_id, timeout=120)
        assert final["problem"] is None and (final["sent"], final["failed"], final["pending"]) == (60, 0, 0)
        room.wait_received(60)
        assert room.received() == {a: 1 for a in addresses}
    finally:
        room.stop_all()
        server.stop()


def test_a_send_paused_for_errors_shows_the_last_smtp_replies(newsroom):
    room = newsroom
    addresses = room.setup_list(120)
    room.capture.replies.update({a: "550 5.7.1 Blocked by policy" for a in addresses[::2]})
    issue_id = room.create_issue()
    room.start_worker(concurrency=1)
    send_id = room.send(issue_id)
    paused = room.wait_status(send_id, ("paused", "finished"))
    assert paused["status"] == "paused"
    problem = paused["problem"]
    assert problem.startswith("The send paused itself because too many deliveries failed ("), problem
    assert '"550 5.7.1 Blocked by policy (in reply to RCPT TO command)"' in problem
    assert f"`newsletter sends resume {send_id}`" in problem


def test_a_send_paused_for_errors_names_no_recipient(newsroom):
    """The reason and the problem are shown to editors, who may not see recipients (issue 16, item 7):
    an SMTP reply that quotes the recipient's address keeps only its domain."""
    room = newsroom
    addresses = room.setup_list(60)
    room.capture.replies.update(
        {a: f"550 5.1.1 <{a}>: Recipient address rejected: User unknown" for a in addresses[::2]}
    )
    issue_id = room.create_issue()
    room.start_worker(concurrency=1)
    send_id = room.send(issue_id)
    paused = room.wait_status(send_id, ("paused", "finished"))
    assert paused["status"] == "paused"
    shown = paused["status_reason"] + paused["problem"]
    assert not [a for a in addresses if a in shown], shown
    domain = addresses[0].split("@")[1]
    assert f'"550 5.1.1 <…@{domain}>: Recipient address rejected: User unknown (in reply to RCPT TO command)"' in shown


def test_an_unreachable_broker_is_named(newsroom_any_db):
    room = newsroom_any_db
    room.setup_list(5)
    issue_id = room.create_issue()
    send_id = room.send(issue_id)
    closed = f"redis://127.0.0.1:{free_port()}/0"
    cut_off = Cli(env={**room.cli.env, "NEWSLETTER_BROKER_URL": closed}, cwd=room.cli.cwd)
    status = json.loads(cut_off("sends", "status", send_id, "--json").stdout)
    assert status["status"] == "sending"
    assert status["problem"].startswith(f"The broker {closed} cannot be reached (")
    assert "the send continues by itself once it is back" in status["problem"]


def test_wait_timeout_gives_up_naming_the_problem(newsroom):
    room = newsroom
    room.setup_list(10)
    issue_id = room.create_issue()
    room.cli.env["NEWSLETTER_STALL_SECONDS"] = "1"
    result = room.cli("send", issue_id, "--wait", "--wait-timeout", "3", check=False)
    assert result.returncode == 124
    send_id = result.stdout.strip().splitlines()[-1]
    assert "Problem: No worker has taken this send's work" in result.stderr
    assert (
        f"Gave up waiting after 3 s: send {send_id} is still sending (0 of 10 done); problem: No worker"
        in result.stderr
    )
    assert f"watch it with: newsletter sends watch {send_id}" in result.stderr
    assert room.status(send_id)["status"] == "sending"  # giving up on waiting does not stop the send

    watched = room.cli("sends", "watch", send_id, "--wait-timeout", "1.5", check=False)
    assert watched.returncode == 124 and "Problem: No worker has taken" in watched.stderr
    refused = room.cli(
        "send", issue_id, "--at", "2099-01-01T08:00+00:00", "--wait-timeout", "5", "--again", check=False
    )
    assert refused.returncode == 1 and "--wait-timeout: use --wait-timeout without --at" in refused.stderr


def test_watch_says_when_the_problem_clears(newsroom):
    room = newsroom
    addresses = room.setup_list(20)
    issue_id = room.create_issue()
    room.cli.env["NEWSLETTER_STALL_SECONDS"] = "1"
    send_id = room.send(issue_id)
    log = room.tmp / "watch.log"
    with open(log, "w") as handle:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "sends", "watch", send_id],
            env=room.cli.env,
            cwd=room.cli.cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Problem: No worker" not in log.read_text() and time.monotonic() < deadline:
            assert watcher.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "Problem: No worker has taken this send's work" in log.read_text()
        room.start_worker(concurrency=1, NEWSLETTER_SEND_RATE="10")  # slow: the watch sees it moving first
        assert watcher.wait(120) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
    output = log.read_text()
    assert f"Problem cleared: send {send_id} is moving again." in output
    assert output.count("Problem: ") == 1, output  # said once, not at every poll
    assert "sent 20, failed 0" in output and room.received() == {a: 1 for a in addresses}


# --- the API and the admin UI --------------------------------------------------------------------


@pytest.mark.redis
def test_the_api_send_status_carries_the_problem(api_with_broker: Api, tmp_path):  # noqa: F811
    api = api_with_broker
    api.settings = dataclasses.replace(api.settings, stall_seconds=0.0)  # stuck as soon as nobody holds the work
    api.make_list()
    for i in range(12):
        api.make_subscriber(f"reader{i:02d}@example.com")
    issue = api.make_issue()
    started = api.post("/api/sends", json={"issue_id": issue["id"]}, role="editor", expect=201).json()
    send_id = started["id"]
    status = api.get(f"/api/sends/{send_id}", role="editor", expect=200).json()
    assert status["problem"].startswith("No worker has taken this send's work")
    [listed] = [s for s in api.get("/api/sends", role="editor", expect=200).json()["items"] if s["id"] == send_id]
    assert listed["problem"].startswith("No worker has taken this send's work")
    assert "problem" in api.get("/openapi.json", expect=200).json()["components"]["schemas"]["SendOut"]["properties"]

    room = Newsroom(cli=Cli(env=clean_environ(**api.environ), cwd=tmp_path), capture=api.capture, tmp=tmp_path)
    try:
        room.start_worker(concurrency=1)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = api.get(f"/api/sends/{send_id}", role="editor", expect=200).json()
            if status["status"] == "finished":
                break
            time.sleep(0.3)
        assert status["status"] == "finished" and status["sent"] == 12 and status["problem"] is None
    finally:
        room.stop_all()


from playwright.sync_api import expect  # noqa: E402

from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console  # noqa: E402
from tests.test_admin_ui import admin, login, make_issue, start_send  # noqa: E402,F401  (admin: fixture)
from tests.test_web_journey import chromium, start_web  # noqa: E402,F401  (chromium: fixture)


@pytest.mark.redis
def test_the_admin_progress_json_send_page_and_dashboard_say_why(admin):  # noqa: F811
    client = admin.client(NEWSLETTER_STALL_SECONDS="0.001")
    login(client, "eddie")
    send_id = start_send(client, make_issue(admin))
    progress = client.get(f"/admin/sends/{send_id}/progress").json()
    assert progress["problem"].startswith("No worker has taken this send's work")
    page = client.get(f"/admin/sends/{send_id}").text
    assert '<p id="p-problem" class="warning" role="status">' in page
    assert "No worker has taken this send&#39;s work" in page and "<code>newsletter worker</code>" in page
    for path in ("/admin", "/admin/sends"):
        listing = client.get(path).text
        assert f'id="problem-{send_id}"' in listing and f"Send #{send_id} is stuck:" in listing, path
    # Every page and poll above asked Redis through one client the app keeps, not one of its own each.
    [shared] = client.app.state.web.health_client
    for _ in range(3):
        client.get(f"/admin/sends/{send_id}/progress")
    assert client.app.state.web.health_client == [shared]

    paused = client.post(f"/admin/sends/{send_id}/pause", data={"csrf_token": csrf(client)})
    assert paused.status_code == 303
    assert client.get(f"/admin/sends/{send_id}/progress").json()["problem"] is None
    page = client.get(f"/admin/sends/{send_id}").text
    assert '<p id="p-problem" class="warning" role="status" hidden>' in page
    assert f'id="problem-{send_id}"' not in client.get("/admin").text


def csrf(client) -> str:
    from tests.test_admin_ui import token

    return token(client)


@pytest.mark.browser
@pytest.mark.redis
@pytest.mark.slow
def test_the_admin_send_page_of_a_stalled_send_says_why_in_plain_words(chromium, newsroom):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    room.cli.env["NEWSLETTER_STALL_SECONDS"] = "3"
    addresses = room.setup_list(15)
    create_user(room, "edna", "editor")
    issue_id = room.create_issue()
    web = start_web(room.cli.env, room.tmp, port)
    try:
        page = chromium.new_context(viewport=DESKTOP).new_page()
        problems = watch_console(page)
        log_in(page, base, "edna")
        send_id = room.send(issue_id)
        page.goto(f"{base}/admin/sends/{send_id}")
        problem = page.locator("#p-problem")
        expect(problem).to_contain_text("Stuck: No worker has taken this send's work for", timeout=60_000)
        expect(problem).to_contain_text("none is running: start one with newsletter worker")
        expect(problem.locator("code")).to_have_text(["newsletter worker"])

        page.goto(f"{base}/admin")
        expect(page.locator(f"#problem-{send_id}")).to_contain_text(f"Send #{send_id} is stuck: No worker has taken")

        page.goto(f"{base}/admin/sends/{send_id}")
        room.start_worker(concurrency=1)
        expect(page.locator("#p-status")).to_have_text("finished", timeout=120_000)
        expect(problem).to_be_hidden()
        assert page.inner_text("#p-sent") == "15"
        assert room.received() == {a: 1 for a in addresses}
        assert problems == []
    finally:
        web.stop()
