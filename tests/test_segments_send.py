"""A segment send mails exactly the segment (real worker, capture SMTP); the `segments` commands."""

from __future__ import annotations

import json

from sqlalchemy import text

from newsletter.store import db


def test_segment_commands_and_a_segment_send_mail_exactly_the_segment(newsroom):
    room = newsroom
    room.cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    csv = room.tmp / "people.csv"
    csv.write_text(
        "email,name,plan\n"
        "ann@gmail.com,Ann,pro\n"
        "bob@gmail.com,Bob Test,team\n"
        "cid@gmail.com,Cid,free\n"
        "dee@example.org,Dee,pro\n",
        encoding="utf-8",
    )
    room.cli("subscribers", "import", "weekly", str(csv), "--confirmed")
    paid = 'domain = "gmail.com" and attribute.plan in ("pro", "team") and not name contains "test"'

    # A trial count, then a bad filter naming its part, then the saved segment.
    assert room.cli("segments", "count", "weekly", paid).stdout.strip().splitlines()[-1] == "1"
    assert room.cli("segments", "count", "weekly", 'attribute.plan = "pro"').stdout.strip().endswith("2")
    bad = room.cli("segments", "create", "weekly", "paid", 'domain = "gmail.com" and plan = "pro"', check=False)
    assert bad.returncode == 1
    assert "filter: unknown field" in bad.stderr and "'plan' at character 26" in bad.stderr
    created = room.cli(
        "segments", "create", "weekly", "gmail-paid", 'domain = "gmail.com" and attribute.plan != "free"'
    )
    assert "Saved segment gmail-paid of weekly: matches 2 subscribers now." in created.stdout
    listed = json.loads(room.cli("segments", "ls", "--json").stdout)
    assert [(s["list"], s["name"]) for s in listed] == [("weekly", "gmail-paid")]
    shown = room.cli("segments", "show", "weekly", "gmail-paid").stdout
    assert 'Filter:  domain = "gmail.com" and attribute.plan != "free"' in shown and "matches 2 subscribers" in shown

    issue = room.create_issue()
    room.start_worker(concurrency=1)
    started = room.cli("send", issue, "--segment", "gmail-paid")
    assert "recipient(s) (segment gmail-paid) in 1 batch(es) queued" in started.stderr
    send_id = started.stdout.strip().splitlines()[-1]
    assert room.wait_status(send_id)["sent"] == 2
    room.wait_received(2)
    assert room.received() == {"ann@gmail.com": 1, "bob@gmail.com": 1}

    # Editing the segment later does not rewrite what the send used.
    room.cli("segments", "create", "weekly", "gmail-paid", 'domain = "example.org"', "--replace")
    engine = db.make_engine(room.cli.env["NEWSLETTER_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT segment_id, segment_name, segment_filter FROM sends WHERE id = :id"), {"id": int(send_id)}
            ).one()
    finally:
        engine.dispose()
    assert row.segment_id is not None and row.segment_name == "gmail-paid"
    assert row.segment_filter == 'domain = "gmail.com" and attribute.plan != "free"'

    # The rest of the list, later: the issue already went to (part of) the list, so --only-new is needed.
    refused = room.cli("send", issue, check=False)
    assert refused.returncode == 1 and "already has a send to weekly" in refused.stderr
    rest = room.send(issue, "--only-new")
    assert room.wait_status(rest)["sent"] == 2
    room.wait_received(4)
    assert room.received() == {"ann@gmail.com": 1, "bob@gmail.com": 1, "cid@gmail.com": 1, "dee@example.org": 1}

    # A segment belongs to one list; several lists with --segment are refused, saying so.
    room.cli("lists", "create", "monthly", "--name", "Monthly", "--from-email", "news@example.org")
    both = room.cli("send", issue, "--list", "weekly", "--list", "monthly", "--segment", "gmail-paid", check=False)
    assert both.returncode == 1 and "--segment: a segment belongs to one list" in both.stderr
    missing = room.cli("send", issue, "--segment", "nobody", "--again", check=False)
    assert missing.returncode == 1 and "weekly has no segment named 'nobody'" in missing.stderr

    room.cli("segments", "delete", "weekly", "gmail-paid")
    assert "No segments yet." in room.cli("segments", "ls", "weekly").stdout
