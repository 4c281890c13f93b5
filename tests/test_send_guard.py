"""Sends an editor can trust: no accidental second send and no silent empty send (issue 15, items 1 and 2).

One rule (newsletter.delivery.audience) behind three edges: the CLI, the API and the admin UI, each
tried here against a real worker, Redis, SMTP capture and both databases.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from newsletter.content.issue_files import read_issue_file
from newsletter.content.issues import RenderSettings, create_issue
from newsletter.delivery import scheduling, sending
from newsletter.delivery.audience import Repeat, SendRefused
from newsletter.store.models import Issue, Send, Suppression, utcnow
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from tests.apikit import Api, api_with_broker, assert_error  # noqa: F401
from tests.conftest import need_service
from tests.sendkit import SAMPLE_ISSUE
from tests.test_admin_journey import DESKTOP, create_user, log_in, watch_console
from tests.test_admin_ui import admin, make_issue, start_send, token  # noqa: F401
from tests.test_web_journey import chromium, free_port, start_web  # noqa: F401

RENDER = RenderSettings.create(base_url="https://news.example.org", postal_address="1 Street", user_template_dir=None)


def _sends(room) -> list[str]:
    """Every send's id, from `newsletter sends ls`."""
    return re.findall(r"^\s*[│|]?\s*(\d+)\s", room.cli("sends", "ls").stdout, re.M)


def test_a_second_send_is_refused_unless_the_editor_says_again_or_only_new(newsroom_any_db):
    room = newsroom_any_db
    first = room.setup_list(3)
    issue = room.create_issue()
    room.start_worker()
    send_1 = room.send(issue)
    assert room.wait_status(send_1)["sent"] == 3

    # The same issue to the same list again: refused, naming the earlier send, and nothing queued.
    refused = room.cli("send", issue, check=False)
    assert refused.returncode == 1
    message = " ".join(refused.stderr.split())
    assert f"issue {issue} already has a send to weekly: send {send_1} finished" in message
    assert "3 of 3 got it" in message and "--again" in message and "--only-new" in message
    assert _sends(room) == [send_1]
    # Scheduling it is refused the same way.
    scheduled = room.cli("send", issue, "--at", (utcnow() + timedelta(days=1)).isoformat(), check=False)
    assert scheduled.returncode == 1 and f"send {send_1} finished" in scheduled.stderr

    # Two new readers: --only-new reaches them and no one else.
    new = ["new1@example.com", "new2@example.com"]
    for address in new:
        room.cli("subscribers", "add", "weekly", address, "--confirmed")
    send_2 = room.send(issue, "--only-new")
    status = room.wait_status(send_2)
    assert status["total"] == 2 and status["sent"] == 2 and status["audience"] == "new"
    room.wait_received(5)
    assert room.received() == Counter({a: 1 for a in first + new})

    # No one is new now: --only-new says so rather than sending to no one.
    nobody = room.cli("send", issue, "--only-new", check=False)
    assert nobody.returncode == 1
    assert "all 5 confirmed subscribers of weekly already got issue" in " ".join(nobody.stderr.split())

    # --again sends to everyone again, on purpose.
    send_3 = room.send(issue, "--again")
    assert room.wait_status(send_3)["sent"] == 5
    room.wait_received(10)
    assert room.received() == Counter({a: 2 for a in first + new})
    both = room.cli("send", issue, "--again", "--only-new", check=False)
    assert both.returncode == 1 and "choose one of --again" in both.stderr
    assert _sends(room) == [send_3, send_2, send_1]


def test_a_send_to_no_one_is_refused_saying_why_from_the_list_counts(cli_any_db, tmp_path):
    cli = cli_any_db
    cli("db", "upgrade")
    cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    csv = tmp_path / "imported.csv"
    csv.write_text("email\n" + "".join(f"imported{i}@example.com\n" for i in range(4)), encoding="utf-8")
    cli("subscribers", "import", "weekly", str(csv))  # without --confirmed: nobody to mail yet
    cli("subscribers", "add", "weekly", "gone@example.com", "--confirmed")
    cli("suppressions", "add", "gone@example.com")
    issue = cli("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout.strip().splitlines()[-1]

    refused = cli("send", issue, check=False)
    assert refused.returncode == 1
    assert (
        "weekly has 0 confirmed subscribers who can be mailed (4 unconfirmed, 1 confirmed but suppressed): "
        "ask the unconfirmed with "
        "`newsletter lists request-confirmation weekly`"
    ) in " ".join(refused.stderr.split())
    assert "No sends yet" in cli("sends", "ls").stdout  # nothing stored
    later = cli("send", issue, "--at", (utcnow() + timedelta(days=1)).isoformat(), check=False)
    assert later.returncode == 1 and "weekly has 0 confirmed subscribers" in later.stderr
    assert "No sends yet" in cli("sends", "ls").stdout

    cli("lists", "create", "empty", "--name", "Empty", "--from-email", "news@example.org")
    none = cli("send", issue, "--list", "empty", check=False)
    assert none.returncode == 1
    assert "empty has 0 confirmed subscribers who can be mailed (0 unconfirmed): add subscribers" in " ".join(
        none.stderr.split()
    )


def test_a_scheduled_send_that_comes_due_empty_is_not_sent_and_says_why(sessions):
    now = utcnow()
    with sessions() as session, session.begin():
        create_list(session, "weekly", name="Weekly", from_email="news@example.org")
        add_subscriber(session, "weekly", "ann@example.com", confirmed=True)
        add_subscriber(session, "weekly", "bob@example.com")
        issue, _ = create_issue(session, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
        send = scheduling.schedule_send(session, issue.id, now + timedelta(hours=1), RENDER, now=now)
        send_id, issue_id = send.id, issue.id
    with sessions() as session, session.begin():
        session.add(Suppression(email="ann@example.com", reason="admin", note="", created_at=now))
    with sessions() as session, session.begin():
        started = scheduling.start_scheduled(session, send_id, RENDER, batch_size=10, now=now + timedelta(hours=1))
        assert started is not None and started.batches == []
    with sessions() as session:
        send = session.get(Send, send_id)
        assert send.status == "cancelled" and send.total == 0
        assert send.status_reason == (
            "not sent: weekly has 0 confirmed subscribers who can be mailed "
            "(1 unconfirmed, 1 confirmed but suppressed): "
            "ask the unconfirmed with `newsletter lists request-confirmation weekly`"
        )
        assert session.get(Issue, issue_id).status != "sent"
    # Nothing went out, so nothing blocks a send once someone can get it.
    with sessions() as session, session.begin():
        add_subscriber(session, "weekly", "cy@example.com", confirmed=True)
        send, batches = sending.start_send(session, issue_id, RENDER, batch_size=10)
        assert send.total == 1 and len(batches) == 1


def test_a_send_whose_readers_all_left_before_the_snapshot_finishes_at_once_saying_why(sessions):
    # The check found a reader, but by the snapshot (INSERT ... SELECT) no one is left to mail:
    # the send finishes with no batch, its reason naming the list and its counts.
    now = utcnow()
    with sessions() as session, session.begin():
        weekly = create_list(session, "weekly", name="Weekly", from_email="news@example.org")
        add_subscriber(session, "weekly", "ann@example.com", confirmed=True)
        add_subscriber(session, "weekly", "bob@example.com")
        issue, _ = create_issue(session, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
        session.add(Suppression(email="ann@example.com", reason="admin", note="", created_at=now))
        send = Send(
            issue_id=issue.id,
            list_id=weekly.id,
            status="sending",
            subject="s",
            html="h",
            text="t",
            created_at=now,
            started_at=now,
        )
        session.add(send)
        session.flush()
        assert sending.snapshot_recipients(session, send, weekly.id, now, batch_size=10) == []
        send_id = send.id
    with sessions() as session:
        send = session.get(Send, send_id)
        assert send.status == "finished" and send.total == 0 and send.finished_at is not None
        assert send.status_reason == (
            "no one to mail: weekly has 0 confirmed subscribers who can be mailed "
            "(1 unconfirmed, 1 confirmed but suppressed)"
        )


def test_a_scheduled_only_new_send_takes_only_the_new_ones_when_it_starts(sessions):
    now = utcnow()
    with sessions() as session, session.begin():
        create_list(session, "weekly", name="Weekly", from_email="news@example.org")
        add_subscriber(session, "weekly", "ann@example.com", confirmed=True)
        issue, _ = create_issue(session, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
        first, _ = sending.start_send(session, issue.id, RENDER, batch_size=10)  # ann's copy is pending
        issue_id = issue.id
    with sessions() as session, session.begin():
        with pytest.raises(SendRefused, match=f"send {first.id} is sending since"):
            scheduling.schedule_send(session, issue_id, now + timedelta(hours=1), RENDER, now=now)
        add_subscriber(session, "weekly", "bob@example.com", confirmed=True)
        later = scheduling.schedule_send(
            session, issue_id, now + timedelta(hours=1), RENDER, now=now, repeat=Repeat.ONLY_NEW
        )
        later_id = later.id
    with sessions() as session, session.begin():
        add_subscriber(session, "weekly", "cy@example.com", confirmed=True)  # joins before it starts
        scheduling.start_scheduled(session, later_id, RENDER, batch_size=10, now=now + timedelta(hours=1))
    with sessions() as session:
        rows = sending.delivery_page(session, later_id)[1]
        assert sorted(r.email for r in rows) == ["bob@example.com", "cy@example.com"]
        assert session.get(Send, later_id).audience == "new"


def test_a_send_cancelled_after_some_got_it_counts_and_a_scheduled_send_for_everyone_blocks_only_new(sessions):
    from sqlalchemy import update

    from newsletter.store.models import Delivery

    now = utcnow()
    with sessions() as session, session.begin():
        create_list(session, "weekly", name="Weekly", from_email="news@example.org")
        for name in ("ann", "bob"):
            add_subscriber(session, "weekly", f"{name}@example.com", confirmed=True)
        issue, _ = create_issue(session, "weekly", read_issue_file(SAMPLE_ISSUE), RENDER)
        issue_id = issue.id
        # Cancelled before anyone got it: it blocks nothing. Nor does one that found no one to mail.
        untouched, _ = sending.start_send(session, issue_id, RENDER, batch_size=10)
        sending.cancel_send(session, untouched.id)
        nobody = Send(
            issue_id=issue_id,
            list_id=untouched.list_id,
            status="finished",
            subject="s",
            html="h",
            text="t",
            total=0,
            created_at=now,
            started_at=now,
            finished_at=now,
        )
        session.add(nobody)
        # Cancelled halfway, after ann got her copy: that counts.
        halfway, _ = sending.start_send(session, issue_id, RENDER, batch_size=10)
        session.execute(
            update(Delivery)
            .where(Delivery.send_id == halfway.id, Delivery.email == "ann@example.com")
            .values(status="sent", sent_at=now)
        )
        sending.cancel_send(session, halfway.id)
    with sessions() as session, session.begin():
        with pytest.raises(SendRefused, match=rf"send {halfway.id} cancelled .*: 1 of 2 got it before that") as refused:
            sending.start_send(session, issue_id, RENDER, batch_size=10)
        assert [e.id for e in refused.value.earlier] == [halfway.id]
        only_new, _ = sending.start_send(session, issue_id, RENDER, batch_size=10, repeat=Repeat.ONLY_NEW)
        assert only_new.total == 1  # bob, who got no copy
        sending.cancel_send(session, only_new.id)

    # A send scheduled for everyone takes the new ones too when it starts: no "only new" before it.
    with sessions() as session, session.begin():
        scheduled = scheduling.schedule_send(
            session, issue_id, now + timedelta(hours=1), RENDER, now=now, repeat=Repeat.AGAIN
        )
        add_subscriber(session, "weekly", "cy@example.com", confirmed=True)
    with sessions() as session, session.begin():
        with pytest.raises(
            SendRefused, match=rf"send {scheduled.id} is scheduled for .* and will mail every confirmed"
        ):
            sending.start_send(session, issue_id, RENDER, batch_size=10, repeat=Repeat.ONLY_NEW)


def test_the_api_answers_409_with_the_same_explanation_and_takes_repeat(api_with_broker):  # noqa: F811
    api: Api = api_with_broker
    api.make_list()
    api.make_subscriber("ann@example.com")
    issue = api.make_issue()
    first = api.post("/api/sends", json={"issue_id": issue["id"]}, role="editor", expect=201).json()
    assert first["audience"] == "all" and first["total"] == 1

    error = assert_error(
        api.post("/api/sends", json={"issue_id": issue["id"]}),
        409,
        says=f"issue {issue['id']} already has a send to weekly: send {first['id']} is sending",
    )
    assert '"repeat": "again"' in error["message"] and '"repeat": "only_new"' in error["message"]
    assert len(api.get("/api/sends", expect=200).json()["items"]) == 1  # nothing stored
    assert_error(
        api.post("/api/sends", json={"issue_id": issue["id"], "repeat": "only_new"}), 409, says="already got issue"
    )
    assert_error(api.post("/api/sends", json={"issue_id": issue["id"], "repeat": "twice"}), 422, field="repeat")

    api.make_subscriber("bob@example.com")
    only_new = api.post("/api/sends", json={"issue_id": issue["id"], "repeat": "only_new"}, expect=201).json()
    assert only_new["audience"] == "new" and only_new["total"] == 1
    again = api.post("/api/sends", json={"issue_id": issue["id"], "repeat": "again"}, expect=201).json()
    assert again["audience"] == "all" and again["total"] == 2
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")
    planned = api.post("/api/sends", json={"issue_id": issue["id"], "repeat": "again", "at": later}, expect=201).json()
    error = assert_error(
        api.post("/api/sends", json={"issue_id": issue["id"], "repeat": "only_new"}),
        409,
        says=f"send {planned['id']} is scheduled for",
    )
    assert f"POST /api/sends/{planned['id']}/cancel" in error["message"] and '"repeat"' not in error["message"]

    api.make_list("quiet")
    api.make_subscriber("dan@example.com", "quiet", confirmed=False)
    error = assert_error(
        api.post("/api/sends", json={"issue_id": issue["id"], "list": "quiet"}),
        409,
        says="quiet has 0 confirmed subscribers who can be mailed (1 unconfirmed)",
    )
    assert "POST /api/lists/quiet/confirmation-requests" in error["message"]


@pytest.mark.browser
def test_the_admin_send_page_shows_the_earlier_send_and_asks_for_an_explicit_choice(chromium, newsroom, tmp_path):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    readers = room.setup_list(4)
    issue = room.create_issue()
    room.start_worker()
    first = room.send(issue)
    room.wait_status(first)
    room.wait_received(4)
    for address in ("new1@example.com", "new2@example.com"):
        room.cli("subscribers", "add", "weekly", address, "--confirmed")
    create_user(room, "edna", "editor")
    web = start_web(room.cli.env, room.tmp, port)
    try:
        page = chromium.new_context(viewport=DESKTOP).new_page()
        problems = watch_console(page)
        log_in(page, base, "edna")
        page.goto(f"{base}/admin/issues/{issue}/send")
        earlier = page.locator("#earlier-sends")
        expect(earlier).to_contain_text(f"Send {first}")
        expect(earlier).to_contain_text("4 of 4 got it")
        choice = page.locator("#repeat-choice")
        expect(choice).to_contain_text("Only the 2 confirmed subscribers who got no copy yet")
        expect(choice).to_contain_text("Everyone again: all 6 confirmed subscribers")
        assert not page.locator("#repeat-only-new").is_checked() and not page.locator("#repeat-again").is_checked()
        assert page.locator("#send-now").count() == 0  # no send button before a choice

        # No choice, no way on: the browser asks for one.
        page.get_by_role("button", name="Continue").click()
        assert page.url == f"{base}/admin/issues/{issue}/send"
        assert page.evaluate("document.querySelector('#repeat-only-new').validationMessage") != ""
        assert _sends(room) == [first]

        page.get_by_label("Only the 2 confirmed subscribers who got no copy yet").check()
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#recipients")).to_contain_text("2 recipients")
        page.get_by_role("button", name="Send now to 2 recipients").click()
        page.wait_for_url(re.compile(rf"{re.escape(base)}/admin/sends/\d+\?done=started"))
        expect(page.locator("#p-status")).to_have_text("finished", timeout=120_000)
        assert page.inner_text("#p-sent") == "2"
        room.wait_received(6)
        assert room.received() == Counter({a: 1 for a in [*readers, "new1@example.com", "new2@example.com"]})
        assert problems == []
    finally:
        web.stop()


def test_the_admin_send_form_refuses_a_second_send_without_a_choice_and_an_empty_one(admin):  # noqa: F811
    """Without a browser's help (no JavaScript, a hand-made POST) the server asks too, and changes nothing."""
    client = admin.logged_in("eddie")
    issue = make_issue(admin)
    first = start_send(client, issue)
    before = admin.snapshot()
    again = client.post(
        f"/admin/issues/{issue}/send", data={"csrf_token": token(client), "list": "weekly", "when": "now"}
    )
    assert again.status_code == 409
    text = html.unescape(again.text)
    assert f"already has a send to weekly: send {first} is sending" in text and "choose below who gets it" in text
    assert 'name="repeat" value="only_new"' in again.text and "Everyone again: all 4 confirmed subscribers" in text
    assert admin.snapshot() == before

    # The unconfirmed "pending@example.com" alone on a list: nothing to send, and the page says why.
    with admin.sessions() as s, s.begin():
        add_subscriber(s, "daily", "pending@example.com")
    before = admin.snapshot()
    empty = client.get(f"/admin/issues/{issue}/send?list=daily")
    assert "daily has 0 confirmed subscribers who can be mailed (1 unconfirmed)" in html.unescape(empty.text)
    assert 'id="send-now"' not in empty.text
    refused = client.post(
        f"/admin/issues/{issue}/send", data={"csrf_token": token(client), "list": "daily", "when": "now"}
    )
    assert refused.status_code == 409 and "ask the unconfirmed to confirm" in refused.text
    assert admin.snapshot() == before


def test_a_send_started_while_the_broker_is_down_says_so_and_goes_out_once_it_is_back(newsroom, tmp_path):
    """The broker (a Redis of the test's own) is down when the editor sends: one error line, no
    "configuration error", the send stored; once Redis and a worker are up, each reader gets one copy."""
    import shutil
    import subprocess
    import time

    from tests.test_web_journey import free_port

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        need_service("redis-server is not installed (Debian's redis-server package)")
    room = newsroom
    readers = room.setup_list(6)
    issue = room.create_issue()
    port = free_port()
    room.cli.env["NEWSLETTER_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
    down = room.cli("send", issue, check=False)
    assert down.returncode == 1 and "configuration error" not in down.stderr
    message = " ".join(down.stderr.split())
    assert message.startswith("error: send 1 is stored but its batches could not be queued (")
    assert "a running worker queues them by itself once the broker is reachable again" in message
    server = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            if (
                subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip()
                == "PONG"
            ):
                break
            time.sleep(0.1)
        room.start_worker()
        assert room.wait_status("1")["sent"] == 6
        room.wait_received(6)
        assert room.received() == Counter({a: 1 for a in readers})
    finally:
        room.stop_all()
        server.terminate()
        server.wait(10)
