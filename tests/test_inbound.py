"""`newsletter inbound`: sample bounces, complaints and unsubscribe mail delivered over real SMTP.

The samples under tests/mail/ are written for these tests in the shapes real servers
send: an RFC 3464 hard bounce, a delay warning (Action: delayed, 4.x.x) and a final
4.x.x failure as Postfix writes them, an RFC 5965 feedback report, Exim's, qmail's and
old Postfix's non-standard bounces, Gmail's and Exim's plain-text delay warnings, and a
vacation auto-reply. They go through smtplib to an aiosmtpd server
(in a thread, or the real `newsletter inbound` process) backed by SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import signal
import smtplib
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.feedback.bounce_parsing import Mailboxes, classify
from newsletter.feedback.inbound import InboundServer, Receiver
from newsletter.mail.return_path import make_return_path
from newsletter.store import db
from newsletter.store.models import Subscriber
from subscribers.tokens import TokenSigner
from tests.bouncekit import (
    KEY,
    RETURN_PATH,
    delivery,
    events,
    sample,
    sent_issue,
    subscription_status,
    suppression,
)

OLD_KEY = "an-old-bounce-test-key-0123456789"
SIGNER = TokenSigner(KEY, [OLD_KEY])
MAILBOXES = Mailboxes(RETURN_PATH, (KEY, OLD_KEY), SIGNER)
NON_STANDARD = ["exim-bounce.eml", "qmail-bounce.eml", "postfix-old-bounce.eml"]


def verp(delivery_id: int, key: str = KEY) -> str:
    return make_return_path(RETURN_PATH, delivery_id, key)


# --- classification alone (no database) -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "verdict"),
    [
        ("dsn-hard.eml", "hard", "dsn"),
        ("dsn-delayed.eml", "delayed", "dsn"),
        ("dsn-soft-failed.eml", "soft", "dsn"),
        ("exim-bounce.eml", "hard", "non-standard bounce"),
        ("qmail-bounce.eml", "hard", "non-standard bounce"),
        ("postfix-old-bounce.eml", "hard", "non-standard bounce"),
        ("gmail-delay-warning.eml", "delayed", "non-standard bounce"),
        ("arf-complaint.eml", "complaint", "feedback report"),
    ],
)
def test_each_sample_is_classified_with_its_address_delivery_and_original_message_id(name, kind, verdict):
    to_verp = sample(name, recipient="reader7@example.com", message_id="<42.3.6b0a@example.org>", return_path=verp(42))
    result = classify(to_verp, [verp(42)], MAILBOXES)
    assert result.verdict == verdict
    [report] = result.reports
    assert (report.kind, report.delivery_id, report.message_id) == (kind, 42, "<42.3.6b0a@example.org>")
    assert report.detail

    # To the bare return path, with the original's envelope sender not ours: the address and Message-ID remain.
    bare = sample(
        name, recipient="Reader7@Example.com", message_id="<42.3.6b0a@example.org>", return_path="news@example.org"
    )
    [report] = classify(bare, [RETURN_PATH], MAILBOXES).reports
    assert (report.kind, report.email, report.delivery_id, report.message_id) == (
        kind,
        "reader7@example.com",
        None,
        "<42.3.6b0a@example.org>",
    )


def test_dsn_details_name_the_status_and_the_servers_words():
    hard = sample(
        "dsn-hard.eml", recipient="ann@example.com", message_id="<1.1.a@example.org>", return_path=RETURN_PATH
    )
    [report] = classify(hard, [RETURN_PATH], MAILBOXES).reports
    assert report.detail.startswith("failed 5.1.1: smtp; 550 5.1.1 <ann@example.com>: Recipient address rejected")
    assert "(report <20261127101503.4Yc3Kq1Zx9z9sW@mx1.example.net>)" in report.detail


def test_dsn_edge_cases_mailbox_full_success_reports_and_several_recipients():
    def dsn(*blocks: str) -> bytes:
        body = "\r\n\r\n".join(("Reporting-MTA: dns; mx.example.net", *blocks))
        return (
            "From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
            f"--b\r\nContent-Type: message/delivery-status\r\n\r\n{body}\r\n\r\n--b--\r\n"
        ).encode()

    full = dsn("Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.2.2")
    assert [r.kind for r in classify(full, [RETURN_PATH], MAILBOXES).reports] == ["soft"]
    expired = dsn("Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 4.4.7")
    assert [r.kind for r in classify(expired, [RETURN_PATH], MAILBOXES).reports] == ["soft"]
    still_trying = dsn("Final-Recipient: rfc822; a@example.com\r\nAction: delayed\r\nStatus: 4.4.7")
    assert [r.kind for r in classify(still_trying, [RETURN_PATH], MAILBOXES).reports] == ["delayed"]
    assert [r.kind for r in classify(still_trying, [verp(5)], MAILBOXES).reports] == ["delayed"]
    relayed = dsn("Final-Recipient: rfc822; a@example.com\r\nAction: relayed\r\nStatus: 2.0.0")
    result = classify(relayed, [RETURN_PATH], MAILBOXES)
    assert result.verdict == "not a bounce" and result.reports == ()
    three = dsn(
        "Final-Recipient: rfc822; b@example.com\r\nAction: delayed\r\nStatus: 4.4.1",
        "Final-Recipient: rfc822; c@example.com\r\nAction: failed\r\nStatus: 4.2.2",
        "Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1",
    )
    assert [(r.email, r.kind) for r in classify(three, [RETURN_PATH], MAILBOXES).reports] == [
        ("b@example.com", "delayed"),
        ("c@example.com", "soft"),
        ("a@example.com", "hard"),
    ]
    # With a VERP address the worst news about the one delivery counts: hard, then soft, then delayed.
    assert [(r.delivery_id, r.kind) for r in classify(three, [verp(5)], MAILBOXES).reports] == [(5, "hard")]
    two = dsn(
        "Final-Recipient: rfc822; b@example.com\r\nAction: delayed\r\nStatus: 4.4.1",
        "Final-Recipient: rfc822; c@example.com\r\nAction: failed\r\nStatus: 4.2.2",
    )
    assert [(r.delivery_id, r.kind) for r in classify(two, [verp(5)], MAILBOXES).reports] == [(5, "soft")]


def test_a_plain_text_exim_delay_warning_is_a_delay_warning_not_a_failure():
    # flufl.bounce's SimpleMatch reads the quoted "RCPT TO:<...>" reply in it as a permanent failure.
    to_verp = sample(
        "exim-delay-warning.eml",
        recipient="reader7@example.com",
        message_id="<42.3.6b0a@example.org>",
        return_path=verp(42),
    )
    result = classify(to_verp, [verp(42)], MAILBOXES)
    assert result.verdict == "non-standard bounce"
    [report] = result.reports
    assert (report.kind, report.email, report.delivery_id) == ("delayed", "reader7@example.com", 42)
    assert report.detail.startswith(
        "delay warning (non-standard bounce: 'Warning: message 1tGa7w-0003Qe-0b delayed 24 hours')"
    )
    bare = sample(
        "exim-delay-warning.eml",
        recipient="reader7@example.com",
        message_id="<42.3.6b0a@example.org>",
        return_path=RETURN_PATH,
    )
    assert [(r.kind, r.email, r.delivery_id) for r in classify(bare, [RETURN_PATH], MAILBOXES).reports] == [
        ("delayed", "reader7@example.com", None),
    ]
    # The same words under a failure's Subject stay a failure: only the report's own Subject tells a warning.
    failure = bare.replace(
        b"Subject: Warning: message 1tGa7w-0003Qe-0b delayed 24 hours",
        b"Subject: Mail delivery failed: returning message to sender",
    )
    assert [r.kind for r in classify(failure, [RETURN_PATH], MAILBOXES).reports] == ["hard"]


def test_a_not_spam_feedback_report_is_no_complaint():
    report = sample(
        "arf-complaint.eml", recipient="a@example.com", message_id="<1.1.a@example.org>", return_path=RETURN_PATH
    )
    result = classify(report.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam"), [RETURN_PATH], MAILBOXES)
    assert result.verdict == "not a bounce" and result.reports == ()


def test_a_vacation_reply_and_a_plain_letter_are_no_bounces():
    vacation = sample("vacation.eml", recipient="a@example.com", message_id="<1.1.a@example.org>", return_path=verp(9))
    result = classify(vacation, [verp(9)], MAILBOXES)
    assert result.verdict == "auto-reply" and result.reports == ()
    letter = b"From: a@example.com\r\nTo: bounces@example.org\r\nSubject: hello\r\n\r\nHow do I change my address?\r\n"
    result = classify(letter, [RETURN_PATH], MAILBOXES)
    assert result.verdict == "unclassified" and result.reports == ()


def test_recipient_roles_refuse_forged_verp_and_unsubscribe_addresses():
    assert MAILBOXES.role(verp(12)) == ("verp", 12)
    assert MAILBOXES.role(verp(12, OLD_KEY)) == ("verp", 12)  # signed before a key rotation
    assert MAILBOXES.role(verp(12, "somebody-elses-key-0123456789")) is None
    assert MAILBOXES.role(verp(12).replace("d12-", "d13-")) is None
    assert MAILBOXES.role("BOUNCES@EXAMPLE.ORG") == ("return path", None)
    assert MAILBOXES.role("bounces@elsewhere.example") is None
    assert MAILBOXES.role("postmaster@example.org") is None
    token = SIGNER.make(3, 4, "unsubscribe")
    assert MAILBOXES.role(f"unsubscribe+{token}@news.example.org") == ("unsubscribe", token)
    assert MAILBOXES.role(f"unsubscribe+{SIGNER.make(3, 4, 'preferences')}@news.example.org") is None
    assert MAILBOXES.role(f"unsubscribe+{token[:-2]}xx@news.example.org") is None
    assert Mailboxes(None, (KEY,), SIGNER).role(verp(12)) is None  # no return path configured: no VERP taken


# --- the server, on SQLite and PostgreSQL ------------------------------------------------


@dataclass
class Inbound:
    sessions: sessionmaker[Session]
    server: InboundServer
    lines: list[str] = field(default_factory=list)

    def deliver(self, data: bytes, rcpt: str | list[str], mail_from: str = "") -> dict:
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=30) as client:
            return client.sendmail(mail_from, rcpt, data)


def start_inbound(sessions: sessionmaker[Session], mailboxes: Mailboxes = MAILBOXES, **server_options) -> Inbound:
    lines: list[str] = []
    receiver = Receiver(sessions, mailboxes, soft_limit=3, soft_days=30, log_line=lines.append)
    server = InboundServer(receiver, port=0, **server_options)
    server.start()
    return Inbound(sessions, server, lines)


@pytest.fixture
def inbound(sessions: sessionmaker[Session]) -> Iterator[Inbound]:
    running = start_inbound(sessions)
    yield running
    running.server.stop()


def test_a_hard_bounce_to_the_verp_address_bounces_the_delivery_and_suppresses(inbound):
    sent = sent_issue(inbound.sessions, ["ann@example.com", "bob@example.com"])
    ann = sent["ann@example.com"]
    # The DSN names a forwarding address; the VERP envelope recipient names the delivery for sure.
    bounce = sample(
        "dsn-hard.eml",
        recipient="ann.lee@forwarded.example",
        message_id=ann.message_id,
        return_path=verp(ann.delivery_id),
    )
    assert inbound.deliver(bounce, verp(ann.delivery_id)) == {}
    assert delivery(inbound.sessions, ann.delivery_id).status == "bounced"
    assert suppression(inbound.sessions, "ann@example.com") == "hard_bounce"
    assert suppression(inbound.sessions, "bob@example.com") is None
    assert events(inbound.sessions) == [("ann@example.com", "hard", ann.delivery_id)]
    assert inbound.lines[-1].startswith(
        f"dsn: hard bounce ann@example.com (delivery {ann.delivery_id}): delivery bounced, suppressed hard_bounce"
    )
    # The same DSN again (a retransmission) counts once.
    inbound.deliver(bounce, verp(ann.delivery_id))
    assert len(events(inbound.sessions)) == 1 and "repeat" in inbound.lines[-1]


@pytest.mark.parametrize("name", ["dsn-hard.eml", *NON_STANDARD])
def test_bounces_to_the_bare_return_path_find_the_delivery_by_message_id(inbound, name):
    sent = sent_issue(inbound.sessions, ["cat@example.com", "dan@example.com"])
    cat = sent["cat@example.com"]
    bounce = sample(name, recipient="cat@example.com", message_id=cat.message_id, return_path="news@example.org")
    inbound.deliver(bounce, RETURN_PATH)
    assert delivery(inbound.sessions, cat.delivery_id).status == "bounced"
    assert suppression(inbound.sessions, "cat@example.com") == "hard_bounce"
    assert events(inbound.sessions) == [("cat@example.com", "hard", cat.delivery_id)]
    assert delivery(inbound.sessions, sent["dan@example.com"].delivery_id).status == "sent"


def test_a_bounce_for_a_message_we_cannot_place_is_kept_unproven_and_suppresses_nothing(inbound):
    bounce = sample(
        "exim-bounce.eml", recipient="old@example.com", message_id="<x@elsewhere.example>", return_path=RETURN_PATH
    )
    inbound.deliver(bounce, RETURN_PATH)
    assert events(inbound.sessions) == [("old@example.com", "hard", None)]
    assert suppression(inbound.sessions, "old@example.com") is None
    assert "hard bounce old@example.com: unproven" in inbound.lines[-1] and "nothing changed" in inbound.lines[-1]
    # A correctly signed VERP address of a delivery that no longer exists: the report alone proves nothing.
    gone = sample(
        "dsn-hard.eml", recipient="gone@example.com", message_id="<x@elsewhere.example>", return_path=verp(999999)
    )
    inbound.deliver(gone, verp(999999))
    assert events(inbound.sessions)[-1] == ("gone@example.com", "hard", None)
    assert suppression(inbound.sessions, "gone@example.com") is None


def test_delay_warnings_are_recorded_but_never_bounce_count_or_suppress_and_a_repeat_is_not_stored(inbound):
    sends = [sent_issue(inbound.sessions, ["eve@example.com"])["eve@example.com"] for _ in range(4)]
    for number, sent in enumerate(sends):  # four messages, more than the soft limit of 3, each delayed
        warning = sample(
            "dsn-delayed.eml",
            recipient="eve@example.com",
            message_id=sent.message_id,
            return_path=verp(sent.delivery_id),
            report_id=f"delay-{number}@mx1.example.net",
        )
        inbound.deliver(warning, verp(sent.delivery_id))
        assert inbound.lines[-1] == (
            f"dsn: delay warning eve@example.com (delivery {sent.delivery_id}): recorded only (the sending server "
            f"is still trying) [delayed 4.2.2: smtp; 452 4.2.2 <eve@example.com>: Mailbox full "
            f"(report <delay-{number}@mx1.example.net>)]"
        )
        if number == 0:  # the second warning about the first message is a repeat: not stored again
            inbound.deliver(warning.replace(b"delay-0@", b"delay-0b@"), verp(sent.delivery_id))
            assert "repeat of an event already recorded" in inbound.lines[-1]
    # Gmail's non-standard warning, found by Message-ID at the bare return path; then Exim's about the same message.
    sends.append(sent_issue(inbound.sessions, ["eve@example.com"])["eve@example.com"])
    gmail = sample(
        "gmail-delay-warning.eml",
        recipient="eve@example.com",
        message_id=sends[-1].message_id,
        return_path="news@example.org",
    )
    inbound.deliver(gmail, RETURN_PATH)
    assert inbound.lines[-1].startswith(
        f"non-standard bounce: delay warning eve@example.com (delivery {sends[-1].delivery_id}): recorded only"
    ), inbound.lines
    exim = sample(
        "exim-delay-warning.eml",
        recipient="eve@example.com",
        message_id=sends[-1].message_id,
        return_path=verp(sends[-1].delivery_id),
    )
    inbound.deliver(exim, verp(sends[-1].delivery_id))
    assert "repeat of an event already recorded" in inbound.lines[-1]

    assert events(inbound.sessions) == [("eve@example.com", "delayed", s.delivery_id) for s in sends]
    assert suppression(inbound.sessions, "eve@example.com") is None
    assert all(delivery(inbound.sessions, s.delivery_id).status == "sent" for s in sends)
    assert subscription_status(inbound.sessions, "eve@example.com")[0] == "confirmed"


def test_failed_dsns_with_a_4xx_status_are_soft_bounces_and_suppress_at_the_limit_delay_warnings_aside(inbound):
    sends = [sent_issue(inbound.sessions, ["ned@example.com"])["ned@example.com"] for _ in range(3)]
    for number, sent in enumerate(sends):
        # The usual story: a server warns about a full mailbox, retries for days, and gives up.
        warning = sample(
            "dsn-delayed.eml",
            recipient="ned@example.com",
            message_id=sent.message_id,
            return_path=verp(sent.delivery_id),
            report_id=f"delay-{number}@mx1.example.net",
        )
        inbound.deliver(warning, verp(sent.delivery_id))
        assert suppression(inbound.sessions, "ned@example.com") is None
        assert delivery(inbound.sessions, sent.delivery_id).status == "sent"
        failure = sample(
            "dsn-soft-failed.eml",
            recipient="ned@example.com",
            message_id=sent.message_id,
            return_path=verp(sent.delivery_id),
            report_id=f"failed-{number}@mx1.example.net",
        )
        inbound.deliver(failure, verp(sent.delivery_id))
        assert delivery(inbound.sessions, sent.delivery_id).status == "bounced"
        assert (
            f"soft bounce ned@example.com (delivery {sent.delivery_id}): delivery bounced, {number + 1} soft bounce(s)"
            in (inbound.lines[-1])
        ), inbound.lines
        if number == 0:  # the same failure reported again is no new bounce
            inbound.deliver(failure.replace(b"failed-0@", b"failed-0b@"), verp(sent.delivery_id))
            assert "repeat" in inbound.lines[-1]
        expected = "soft_bounce" if number == 2 else None
        assert suppression(inbound.sessions, "ned@example.com") == expected, inbound.lines
    assert [e[1] for e in events(inbound.sessions)] == ["delayed", "soft"] * 3
    assert "3 soft bounce(s) in the window, suppressed soft_bounce" in inbound.lines[-1]


def test_a_feedback_report_unsubscribes_and_suppresses(inbound):
    weekly = sent_issue(inbound.sessions, ["fay@example.com"], slug="weekly")["fay@example.com"]
    sent_issue(inbound.sessions, ["fay@example.com"], slug="daily")
    # Feedback loops mail a fixed address; the report keeps our VERP envelope sender.
    report = sample(
        "arf-complaint.eml",
        recipient="fay@example.com",
        message_id=weekly.message_id,
        return_path=verp(weekly.delivery_id),
    )
    inbound.deliver(report, RETURN_PATH)
    assert subscription_status(inbound.sessions, "fay@example.com", "weekly") == (
        "unsubscribed",
        "complaint (marked as spam)",
    )
    assert subscription_status(inbound.sessions, "fay@example.com", "daily")[0] == "confirmed"
    assert suppression(inbound.sessions, "fay@example.com") == "complaint"
    assert events(inbound.sessions) == [("fay@example.com", "complaint", weekly.delivery_id)]
    assert delivery(inbound.sessions, weekly.delivery_id).status == "sent"


def test_mail_to_the_list_unsubscribe_address_unsubscribes_from_that_list(inbound):
    sent = sent_issue(inbound.sessions, ["gil@example.com"], slug="weekly")["gil@example.com"]
    sent_issue(inbound.sessions, ["gil@example.com"], slug="daily")
    with inbound.sessions() as s:
        subscriber_id = s.scalar(select(Subscriber.id).where(Subscriber.email == "gil@example.com"))
    address = f"unsubscribe+{SIGNER.make(subscriber_id, sent.list_id, 'unsubscribe')}@example.org"
    letter = EmailMessage()
    letter["From"], letter["To"], letter["Subject"] = "Gil <gil@example.com>", address, "unsubscribe"
    letter.set_content("")
    inbound.deliver(letter.as_bytes(), address, mail_from="gil@example.com")
    assert subscription_status(inbound.sessions, "gil@example.com", "weekly") == (
        "unsubscribed",
        "unsubscribe email (List-Unsubscribe mailto)",
    )
    assert subscription_status(inbound.sessions, "gil@example.com", "daily")[0] == "confirmed"
    assert suppression(inbound.sessions, "gil@example.com") is None
    assert events(inbound.sessions) == [("gil@example.com", "unsubscribe", None)]
    assert inbound.lines[-1] == "unsubscribe: unsubscribe gil@example.com: left weekly"

    # A token for a list the address is on, but not valid (forged): refused at RCPT, nothing changes.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        inbound.deliver(letter.as_bytes(), address.replace("unsubscribe+v1", "unsubscribe+v2"))
    assert next(iter(refused.value.recipients.values()))[0] == 550


def test_foreign_and_forged_recipients_are_refused_and_nothing_is_recorded(inbound):
    ann = sent_issue(inbound.sessions, ["ann@example.com"])["ann@example.com"]
    bounce = sample("dsn-hard.eml", recipient="ann@example.com", message_id=ann.message_id, return_path=RETURN_PATH)
    forged = make_return_path(RETURN_PATH, ann.delivery_id, "an-attackers-guess-at-the-key")
    for rcpt in ("postmaster@example.org", "someone@elsewhere.example", forged):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            inbound.deliver(bounce, rcpt)
        assert next(iter(refused.value.recipients.values()))[0] == 550
    assert events(inbound.sessions) == []
    assert suppression(inbound.sessions, "ann@example.com") is None
    assert delivery(inbound.sessions, ann.delivery_id).status == "sent"


def test_auto_replies_and_unclassifiable_mail_are_accepted_logged_and_change_nothing(inbound):
    ann = sent_issue(inbound.sessions, ["ann@example.com"])["ann@example.com"]
    vacation = sample("vacation.eml", recipient="ann@example.com", message_id=ann.message_id, return_path=RETURN_PATH)
    assert inbound.deliver(vacation, verp(ann.delivery_id), mail_from="") == {}
    assert inbound.lines[-1].startswith("auto-reply from <> to bounces+")
    letter = b"From: ann@example.com\r\nTo: bounces@example.org\r\nSubject: a question\r\n\r\nHello?\r\n"
    assert inbound.deliver(letter, RETURN_PATH, mail_from="ann@example.com") == {}
    assert inbound.lines[-1].startswith("unclassified from <ann@example.com> to bounces@example.org")
    # A bounce that reaches the unsubscribe address unsubscribes no one.
    token_address = f"unsubscribe+{SIGNER.make(1, ann.list_id, 'unsubscribe')}@example.org"
    bounce = sample("dsn-hard.eml", recipient="ann@example.com", message_id=ann.message_id, return_path=RETURN_PATH)
    assert inbound.deliver(bounce, token_address) == {}
    assert events(inbound.sessions) == []
    assert subscription_status(inbound.sessions, "ann@example.com")[0] == "confirmed"
    assert delivery(inbound.sessions, ann.delivery_id).status == "sent"


def test_without_a_return_path_only_unsubscribe_addresses_are_taken(sessions):
    running = start_inbound(sessions, Mailboxes(None, (KEY,), SIGNER))
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            running.deliver(b"Subject: x\r\n\r\nx\r\n", verp(1))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            running.deliver(b"Subject: x\r\n\r\nx\r\n", RETURN_PATH)
    finally:
        running.server.stop()


def test_an_unreachable_database_answers_451_so_the_sender_retries(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'newsletter.db'}")
    running = start_inbound(db.session_factory(engine))
    try:
        bounce = sample(
            "dsn-hard.eml", recipient="ann@example.com", message_id="<1.1.a@example.org>", return_path=RETURN_PATH
        )
        with pytest.raises(smtplib.SMTPDataError) as exc:
            running.deliver(bounce, RETURN_PATH)
        assert exc.value.smtp_code == 451
    finally:
        running.server.stop()
        engine.dispose()


def test_messages_over_the_size_limit_are_refused(sessions):
    running = start_inbound(sessions, data_size_limit=4096)
    try:
        with pytest.raises(smtplib.SMTPException) as exc:
            running.deliver(b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" * 100 + b"y" * 8000 + b"\r\n", RETURN_PATH)
        assert "552" in str(exc.value) or getattr(exc.value, "smtp_code", None) == 552
    finally:
        running.server.stop()


# --- the real command, end to end ----------------------------------------------------------


class InboundProcess:
    """`newsletter inbound --port 0` as a process; its stdout lines are collected by a thread."""

    def __init__(self, env: dict[str, str], cwd) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "inbound", "--port", "0"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None  # a pipe, as asked
        seen = []
        for line in self.proc.stderr:  # log lines may come first
            seen.append(line)
            if "Receiving mail on" in line:
                break
        else:
            self.proc.kill()
            raise AssertionError("newsletter inbound did not start:\n" + "".join(seen))
        self.port = int(line.split(" for ")[0].rsplit(":", 1)[1])
        self.lines: list[str] = []
        self.log: list[str] = []
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.log)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def deliver(self, data: bytes, rcpt: str, mail_from: str = "") -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(mail_from, [rcpt], data)

    def wait_lines(self, count: int) -> list[str]:
        # The line is printed before the SMTP reply is sent, but read by another thread.
        for _ in range(200):
            if len(self.lines) >= count:
                break
            threading.Event().wait(0.05)
        return self.lines

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def test_a_hard_bounce_received_by_newsletter_inbound_keeps_the_address_out_of_the_next_send(newsroom):
    newsroom.cli.env.update(NEWSLETTER_RETURN_PATH=RETURN_PATH, NEWSLETTER_SECRET_KEY=KEY)
    addresses = newsroom.setup_list(6)
    newsroom.start_worker()
    first = newsroom.send(newsroom.create_issue())
    assert newsroom.wait_status(first)["sent"] == 6
    bounced, leaving, delayed = addresses[2], addresses[4], addresses[1]
    original = newsroom.parsed(bounced)
    envelope_from = next(m.mail_from for m in newsroom.capture.messages if bounced in m.rcpt_tos)
    delayed_from = next(m.mail_from for m in newsroom.capture.messages if delayed in m.rcpt_tos)
    # The send path gives each delivery its own VERP envelope sender, where its bounce comes back.
    assert envelope_from.startswith("bounces+d") and envelope_from.endswith("@example.org"), envelope_from
    rcpt = envelope_from

    inbound = InboundProcess(newsroom.cli.env, newsroom.cli.cwd)
    try:
        dsn = sample(
            "dsn-hard.eml", recipient=bounced, message_id=str(original["Message-ID"]), return_path=envelope_from
        )
        inbound.deliver(dsn, rcpt)
        # The reader who mails the List-Unsubscribe address leaves the list too.
        mailto = str(newsroom.parsed(leaving)["List-Unsubscribe"]).split("<mailto:")[1].split("?")[0]
        letter = EmailMessage()
        letter["From"], letter["To"], letter["Subject"] = leaving, mailto, "unsubscribe"
        letter.set_content("")
        inbound.deliver(letter.as_bytes(), mailto, mail_from=leaving)
        # A delay warning about another reader's copy is kept and changes nothing.
        delay = sample(
            "dsn-delayed.eml",
            recipient=delayed,
            message_id=str(newsroom.parsed(delayed)["Message-ID"]),
            return_path=delayed_from,
        )
        inbound.deliver(delay, delayed_from)
        lines = inbound.wait_lines(3)
    finally:
        assert inbound.stop() == 0
    assert any(
        f"hard bounce {bounced}" in line and "delivery bounced, suppressed hard_bounce" in line for line in lines
    ), lines
    assert any(f"unsubscribe {leaving}: left weekly" in line for line in lines), lines
    assert any(f"delay warning {delayed}" in line and "recorded only" in line for line in lines), lines

    log = list(csv.DictReader(io.StringIO(newsroom.cli("sends", "log", first, "--csv").stdout)))
    statuses = {row["email"]: row["status"] for row in log}
    assert statuses[bounced] == "bounced" and statuses[delayed] == "sent"
    assert sum(row["status"] == "bounced" for row in log) == 1
    shown = newsroom.cli("bounces", "ls").stdout
    assert bounced in shown and leaving in shown and delayed in shown and "3 event(s)." in shown
    delays = newsroom.cli("bounces", "ls", "--kind", "delayed").stdout
    assert delayed in delays and bounced not in delays and "1 event(s)." in delays

    second = newsroom.send(newsroom.create_issue())
    assert newsroom.wait_status(second)["sent"] == 4
    newsroom.wait_received(10)
    received = newsroom.received()
    assert received[bounced] == 1 and received[leaving] == 1
    assert all(received[a] == 2 for a in addresses if a not in (bounced, leaving))  # the delayed reader included
