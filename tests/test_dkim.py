"""DKIM signing and VERP return paths: stock dkimpy verifies what we sign, through the real send path.

The verifier is dkimpy's own ``dkim.verify()``, untouched, with its DNS lookup answered by
the record `newsletter dkim keygen` printed for a key made for the test. Our signer uses
dkimpy's canonicalisation, so every message of a real send is also checked by a verifier
that shares no code with either: Perl's Mail::DKIM (tests/tools/mail_dkim_verify.pl).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import stat
import subprocess
import time
from email import message_from_bytes, policy
from pathlib import Path

import dkim
import pytest

from newsletter.mail.dkim_keys import generate_private_key, private_key_pem, record_value
from newsletter.mail.dkim_signing import SIGNED_HEADERS, DkimSigner
from newsletter.mail.messages import CompiledMessage
from newsletter.mail.return_path import delivery_of, make_return_path
from tests.conftest import need_service
from tests.test_messages import HEADERS, RENDERED, recipient

KEY = "dkim-test-secret-key-0123456789abcdef"
SELECTOR, DOMAIN = "nl1", "example.org"
RECORD_NAME = f"{SELECTOR}._domainkey.{DOMAIN}."


def dns_for(record: str):
    """dkimpy's dnsfunc: the TXT record at our selector's name, and nothing anywhere else."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record.encode("ascii") if name.decode("ascii") == RECORD_NAME else None

    return lookup


def verifies(data: bytes, record: str) -> bool:
    return dkim.verify(data, dnsfunc=dns_for(record))


MAIL_DKIM = Path(__file__).parent / "tools" / "mail_dkim_verify.pl"


def mail_dkim_results(messages: list[bytes], record: str, folder: Path) -> list[str]:
    """Perl Mail::DKIM's result for each message ("pass", "fail", ...), its DNS answered with ``record``."""
    perl = shutil.which("perl")
    if perl is None or subprocess.run([perl, "-MMail::DKIM::Verifier", "-e", "1"], capture_output=True).returncode:
        need_service("Perl's Mail::DKIM is not installed (apt-get install libmail-dkim-perl)")
    files = []
    for n, data in enumerate(messages):
        files.append(folder / f"message-{n}.eml")
        files[-1].write_bytes(data)
    done = subprocess.run(
        [perl, str(MAIL_DKIM), RECORD_NAME, record, *map(str, files)], capture_output=True, text=True, check=True
    )
    results = dict(line.split(" ", 2)[:2] for line in done.stdout.splitlines())
    return [results[str(f)] for f in files]


@pytest.fixture(scope="module")
def key():
    return generate_private_key(2048)


@pytest.fixture(scope="module")
def signer(key) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, key)


NAMES = ["Ann Lee", "", "Zoë Weiß-Łukasz " * 6, '"Quoted", <odd> & co', ".dot"]


@pytest.mark.parametrize("name", NAMES)
def test_the_signature_is_byte_for_byte_what_stock_dkimpy_makes(key, signer, name, monkeypatch):
    message = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text)
    _, data = message.build(recipient(name, "ann@bücher.de"))
    now = int(time.time())
    ours = signer.signature(data, now=now)
    monkeypatch.setattr(dkim.time, "time", lambda: float(now))  # the t= tag is the only input besides message and key
    stock = dkim.sign(
        data, SELECTOR.encode(), DOMAIN.encode(), private_key_pem(key), include_headers=list(SIGNED_HEADERS)
    )
    assert ours == stock
    monkeypatch.undo()
    assert verifies(ours + data, record_value(key))


@pytest.mark.parametrize(
    "head",
    [
        # Folded with tabs and runs of spaces, an empty field, odd case: the relaxed forms must match dkimpy's.
        b"From: Ann <ann@example.org>\r\nSUBJECT:   Hello\r\n\t  there  \r\nX-Empty:\r\nTo: bob@example.com\r\n",
        # A bare LF inside the header: dkimpy's own parser takes over.
        b"From: Ann <ann@example.org>\r\nSubject: one\n two\r\nTo: bob@example.com\r\n",
    ],
)
def test_unusual_headers_sign_exactly_as_stock(key, signer, head, monkeypatch):
    data = head + b"\r\nBody line  \r\n\r\n\r\n"
    now = int(time.time())
    ours = signer.signature(data, now=now)
    monkeypatch.setattr(dkim.time, "time", lambda: float(now))
    assert ours == dkim.sign(
        data, SELECTOR.encode(), DOMAIN.encode(), private_key_pem(key), include_headers=list(SIGNED_HEADERS)
    )


def test_signed_fields_and_tags(key, signer):
    _, data = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text).build(recipient())
    signed = signer.sign(data)
    assert signed.endswith(data) and signed.startswith(b"DKIM-Signature: ")
    field = signed[: len(signed) - len(data)].decode("ascii")
    assert all(len(line) <= 78 for line in field.split("\r\n"))
    tags = dict(t.strip().split("=", 1) for t in re.sub(r"\r\n\s+", " ", field.split(":", 1)[1]).split(";"))
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/simple" and tags["d"] == DOMAIN and tags["s"] == SELECTOR
    assert [h.strip() for h in tags["h"].split(":")] == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "feedback-id",
        "reply-to",
        "from",
        "subject",
    ]
    assert abs(int(tags["t"]) - time.time()) < 120


def test_tampering_breaks_the_signature(key, signer, tmp_path):
    record = record_value(key)
    headers = HEADERS.__class__(**{**HEADERS.__dict__, "reply_to": None, "feedback_id": "7:weekly:newsletter"})
    _, data = CompiledMessage(headers, RENDERED.html, RENDERED.text).build(recipient("Ann Lee"))
    signed = signer.sign(data)
    assert verifies(signed, record)
    head, body = signed.split(b"\r\n\r\n", 1)
    changes = {
        "a changed body": head + b"\r\n\r\n" + body.replace(b"Moscow", b"Moskau", 1),
        "a changed subject": signed.replace(b"Subject: This Week", b"Subject: That Week", 1),
        "a second From": head + b"\r\nFrom: Eve <eve@attacker.example>\r\n\r\n" + body,
        "an added Reply-To": head + b"\r\nReply-To: eve@attacker.example\r\n\r\n" + body,
        "a changed List-Unsubscribe": signed.replace(b"unsubscribe/v1.1.", b"unsubscribe/v1.9.", 1),
        "a changed Feedback-ID": signed.replace(b"Feedback-ID: 7:", b"Feedback-ID: 8:", 1),
        "a text appended to the body": signed + b"Click here!\r\n",
    }
    for what, tampered in changes.items():
        assert tampered != signed, what
        assert not verifies(tampered, record), what
    # What relaxed/simple allows on the way: header fields re-folded, or an unsigned one added.
    allowed = [
        signed.replace(b"List-Unsubscribe-Post: ", b"List-Unsubscribe-Post:\r\n  ", 1),
        b"Received: from relay.example by mx.example\r\n" + signed,
    ]
    assert all(verifies(message, record) for message in allowed)
    # Mail::DKIM, which shares no code with dkimpy, judges each the same way.
    assert mail_dkim_results([signed, *allowed, *changes.values()], record, tmp_path) == (
        ["pass"] * 3 + ["fail"] * len(changes)
    )
    # Another key, same selector published: fails.
    assert not verifies(signed, record_value(generate_private_key(1024)))


def test_an_unusable_key_file_is_a_configuration_error_naming_the_setting(tmp_path):
    from newsletter.config import DkimSettings
    from newsletter.errors import ConfigError

    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nnonsense\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"^NEWSLETTER_DKIM_PRIVATE_KEY_FILE: .*not a PEM private key"):
        DkimSigner.from_settings(DkimSettings(DOMAIN, SELECTOR, bad))


# --- `newsletter dkim keygen` ---------------------------------------------------------------------


def keygen(cli, *args: str, check: bool = True):
    return cli("dkim", "keygen", "--domain", DOMAIN, "--selector", SELECTOR, *args, check=check)


def printed_record(stdout: str) -> tuple[str, str]:
    """The zone-file line keygen printed, and its value (the quoted strings joined)."""
    line = next(printed for printed in stdout.splitlines() if " IN TXT " in printed)
    strings = re.findall(r'"([^"]*)"', line)
    assert all(len(s) <= 255 for s in strings) and len(strings) >= 2  # a 2048-bit key's value needs two strings
    return line, "".join(strings)


def test_keygen_writes_a_private_key_and_prints_the_record_and_settings(cli, tmp_path):
    out_file = tmp_path / "keys" / "dkim.pem"
    result = keygen(cli, "--out", str(out_file))
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert out_file.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    line, value = printed_record(result.stdout)
    assert line.startswith(f'{RECORD_NAME} IN TXT "v=DKIM1; k=rsa; p=MIIB')
    assert value in result.stdout  # also in one piece, for DNS providers' forms
    for setting in (
        f"NEWSLETTER_DKIM_DOMAIN={DOMAIN}",
        f"NEWSLETTER_DKIM_SELECTOR={SELECTOR}",
        f"NEWSLETTER_DKIM_PRIVATE_KEY_FILE={out_file.resolve()}",
    ):
        assert setting in result.stdout.splitlines()
    # The key and the record go together: a message signed with the key verifies against the record.
    from newsletter.config import DkimSettings

    signer = DkimSigner.from_settings(DkimSettings(DOMAIN, SELECTOR, out_file))
    assert signer.key_bits == 2048
    _, data = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text).build(recipient())
    assert verifies(signer.sign(data), value)


def test_keygen_refuses_to_overwrite_and_bad_values(cli, tmp_path):
    out_file = tmp_path / "dkim.pem"
    keygen(cli, "--out", str(out_file))
    before = out_file.read_bytes()
    again = keygen(cli, "--out", str(out_file), check=False)
    assert again.returncode == 1 and "already exists; not overwriting" in again.stderr and str(out_file) in again.stderr
    assert out_file.read_bytes() == before
    small = keygen(cli, "--out", str(tmp_path / "small.pem"), "--bits", "512", check=False)
    assert small.returncode == 1 and "--bits" in small.stderr and not (tmp_path / "small.pem").exists()
    bad = cli(
        "dkim",
        "keygen",
        "--domain",
        "not a domain",
        "--selector",
        SELECTOR,
        "--out",
        str(tmp_path / "x.pem"),
        check=False,
    )
    assert bad.returncode == 1 and "--domain: not a domain name" in bad.stderr
    # Default place: under NEWSLETTER_VAR_DIR, named after the record.
    default = keygen(cli)
    path = Path(cli.env["NEWSLETTER_VAR_DIR"]) / "dkim" / f"{SELECTOR}._domainkey.{DOMAIN}.pem"
    assert f"NEWSLETTER_DKIM_PRIVATE_KEY_FILE={path.resolve()}" in default.stdout and path.exists()


# --- the real send path ---------------------------------------------------------------------------


@pytest.fixture
def signed_room(newsroom, tmp_path):
    """The newsroom with a fresh DKIM key and a return path configured; yields (room, published record value)."""
    room = newsroom
    key_file = tmp_path / "dkim.pem"
    _, record = printed_record(keygen(room.cli, "--out", str(key_file)).stdout)
    room.cli.env.update(
        NEWSLETTER_DKIM_DOMAIN=DOMAIN,
        NEWSLETTER_DKIM_SELECTOR=SELECTOR,
        NEWSLETTER_DKIM_PRIVATE_KEY_FILE=str(key_file),
        NEWSLETTER_RETURN_PATH="bounces@example.org",
        NEWSLETTER_SECRET_KEY=KEY,
    )
    return room, record


def test_every_message_of_a_real_send_verifies_and_carries_its_own_return_path(signed_room):
    room, record = signed_room
    addresses = room.setup_list(60)
    issue_id = room.create_issue()
    worker = room.start_worker(concurrency=2)
    assert "Signing with DKIM: d=example.org s=nl1 (2048-bit RSA)" in worker.log.read_text()
    send_id = room.send(issue_id)
    final = room.wait_status(send_id)
    assert (final["sent"], final["failed"]) == (60, 0)
    log = {row["email"]: row for row in csv.DictReader(io.StringIO(room.cli("sends", "log", send_id, "--csv").stdout))}
    assert set(log) == set(addresses) and len(room.capture.messages) == 60
    for captured in room.capture.messages:
        (rcpt,) = captured.rcpt_tos
        delivery_id = int(log[rcpt]["delivery_id"])
        assert verifies(captured.data, record), rcpt
        assert captured.mail_from == make_return_path("bounces@example.org", delivery_id, KEY)
        assert delivery_of(captured.mail_from, "bounces@example.org", [KEY]) == delivery_id
        parsed = message_from_bytes(captured.data, policy=policy.default)
        assert parsed["Message-ID"] == log[rcpt]["message_id"] and parsed["Message-ID"].endswith("@example.org>")
        assert parsed["Feedback-ID"] == f"{send_id}:weekly:newsletter:example.org"
        assert parsed["DKIM-Signature"] is not None and captured.data.startswith(b"DKIM-Signature: ")
    envelopes = {m.mail_from for m in room.capture.messages}
    assert len(envelopes) == 60  # one VERP address per delivery
    # An independent verifier (Perl's Mail::DKIM) passes every message too.
    assert mail_dkim_results([m.data for m in room.capture.messages], record, room.tmp) == ["pass"] * 60


def test_test_sends_and_confirmation_emails_are_signed_too(signed_room):
    room, record = signed_room
    room.setup_list(1)
    issue_id = room.create_issue()
    room.cli("issues", "test-send", issue_id, "--to", "editor@example.com")
    (test,) = [m for m in room.capture.messages if "editor@example.com" in m.rcpt_tos]
    assert verifies(test.data, record) and b"Subject: [TEST] " in test.data
    assert test.mail_from == "bounces@example.org"  # not a delivery: the plain return path

    # A confirmation email: the web app queues it, a real worker signs and sends it.
    from fastapi.testclient import TestClient

    from newsletter.config import Settings
    from newsletter.http.app import create_app

    room.start_worker(concurrency=1)
    settings = Settings.from_environ(room.cli.env)
    with TestClient(create_app(settings), client=("203.0.113.9", 50000)) as client:
        answer = client.post("/subscribe/weekly", data={"email": "new.reader@example.com", "name": "New Reader"})
    assert answer.status_code == 200
    room.wait_received(2)
    (confirmation,) = [m for m in room.capture.messages if "new.reader@example.com" in m.rcpt_tos]
    assert verifies(confirmation.data, record) and b"/confirm/" in confirmation.data.replace(b"=\r\n", b"")
    assert confirmation.mail_from == "bounces@example.org"
    parsed = message_from_bytes(confirmation.data, policy=policy.default)
    assert parsed["Feedback-ID"] == "confirm:weekly:confirmation:example.org"


def test_a_worker_with_an_unusable_key_stops_at_once_naming_the_setting(newsroom, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    os.chmod(bad, 0o600)
    newsroom.cli.env.update(
        NEWSLETTER_DKIM_DOMAIN=DOMAIN, NEWSLETTER_DKIM_SELECTOR=SELECTOR, NEWSLETTER_DKIM_PRIVATE_KEY_FILE=str(bad)
    )
    result = newsroom.cli("worker", check=False)
    assert result.returncode == 1
    assert f"configuration error: NEWSLETTER_DKIM_PRIVATE_KEY_FILE: {bad} is not a PEM private key" in result.stderr
