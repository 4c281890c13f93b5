"""SmtpTransport against a real CaptureServer (aiosmtpd) on a free local port: no mocks."""

from __future__ import annotations

import mailbox
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import SmtpSettings
from newsletter.devtools.smtp_capture import DISCONNECT, CaptureServer
from newsletter.errors import InvalidInput, PermanentDeliveryError, TemporaryDeliveryError
from newsletter.mail.transport import ConnectionLost, SmtpReply, SmtpTransport, enhanced_status, is_unknown_user

SENDER = "news@example.org"


def message(subject: str = "Hello", body: str = "Hi there.\r\n") -> bytes:
    """A small message already in wire form."""
    return f"From: {SENDER}\r\nTo: ann@example.com\r\nSubject: {subject}\r\n\r\n{body}".encode()


def dot_stuff(data: bytes) -> bytes:
    return b"".join(b"." + line if line.startswith(b".") else line for line in data.splitlines(keepends=True))


@pytest.fixture
def start_server() -> Iterator[Callable[..., CaptureServer]]:
    servers: list[CaptureServer] = []

    def start(**kwargs: Any) -> CaptureServer:
        server = CaptureServer(port=0, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def connect() -> Iterator[Callable[..., SmtpTransport]]:
    transports: list[SmtpTransport] = []

    def make(server: CaptureServer, **kwargs: Any) -> SmtpTransport:
        settings = {"host": "127.0.0.1", "port": server.port, "security": kwargs.pop("security", "none")}
        settings.update({k: kwargs.pop(k) for k in ("username", "password", "host") if k in kwargs})
        transport = SmtpTransport(SmtpSettings(**settings), timeout=5, **kwargs)
        transports.append(transport)
        return transport

    yield make
    for transport in transports:
        transport.close()


both_modes = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])


@both_modes
def test_one_connection_carries_many_messages(start_server, connect, pipelining: bool) -> None:
    server = start_server(pipelining=pipelining)
    transport = connect(server)
    for n in range(30):
        reply = transport.send(SENDER, f"reader{n}@example.com", message(f"Issue {n}"))
        assert reply == SmtpReply(250, "2.0.0 OK: captured")
    assert transport.pipelining is pipelining
    assert server.connections == 1
    assert [m.rcpt_tos for m in server.messages] == [(f"reader{n}@example.com",) for n in range(30)]
    assert all(m.mail_from == SENDER for m in server.messages)


@both_modes
def test_bytes_arrive_as_sent(start_server, connect, pipelining: bool) -> None:
    server = start_server(pipelining=pipelining)
    transport = connect(server)
    original = message(body=".hidden\r\n.\r\n..\r\n.\r\nend.\r\n") + b"x" * 990 + b"\r\n"
    transport.send(SENDER, "ann@example.com", dot_stuff(original))
    # No CRLF at the end: the transport adds the one the end-of-data line needs.
    transport.send(SENDER, "ann@example.com", b"Subject: short\r\n\r\nno newline")
    assert server.messages[0].data == original  # un-stuffed once by the server: stuffed exactly once
    assert server.messages[1].data == b"Subject: short\r\n\r\nno newline\r\n"


@both_modes
def test_rejected_recipients_raise_and_the_connection_stays_usable(start_server, connect, pipelining: bool) -> None:
    server = start_server(
        pipelining=pipelining,
        replies={
            "Gone@Example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown",
            "busy@example.com": "451 4.3.0 Try again later",
            "blocked@example.com": "554 5.7.1 Policy rejection",
        },
    )
    transport = connect(server)
    with pytest.raises(PermanentDeliveryError) as gone:
        transport.send(SENDER, "gone@example.com", message())
    assert gone.value.code == 550
    assert str(gone.value).startswith("550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown")
    assert "RCPT TO" in str(gone.value)
    assert is_unknown_user(gone.value)

    with pytest.raises(TemporaryDeliveryError) as busy:
        transport.send(SENDER, "busy@example.com", message())
    assert busy.value.code == 451 and "451 4.3.0 Try again later" in str(busy.value)

    with pytest.raises(PermanentDeliveryError) as blocked:
        transport.send(SENDER, "blocked@example.com", message())
    assert blocked.value.code == 554 and not is_unknown_user(blocked.value)

    assert transport.send(SENDER, "ann@example.com", message()).code == 250
    assert server.connections == 1
    assert [m.rcpt_tos for m in server.messages] == [("ann@example.com",)]


@both_modes
def test_rejection_of_the_content_and_of_the_size(start_server, connect, pipelining: bool) -> None:
    server = start_server(
        pipelining=pipelining, data_size_limit=2000, data_replies={"spam@example.com": "554 5.7.1 Looks like spam"}
    )
    transport = connect(server)
    with pytest.raises(PermanentDeliveryError) as spam:
        transport.send(SENDER, "spam@example.com", message())
    assert spam.value.code == 554 and "end of DATA" in str(spam.value)

    # SIZE is declared, so the server refuses at MAIL FROM (and, pipelined, answers RCPT and DATA with 503).
    with pytest.raises(PermanentDeliveryError) as big:
        transport.send(SENDER, "ann@example.com", message(body="x" * 3000 + "\r\n"))
    assert big.value.code == 552 and "MAIL FROM" in str(big.value)
    assert not is_unknown_user(big.value)

    transport.send(SENDER, "ann@example.com", message())
    assert server.connections == 1
    assert len(server.messages) == 1


def test_reconnects_when_the_server_hangs_up_between_messages(start_server, connect) -> None:
    server = start_server(disconnect_after=3)
    transport = connect(server)
    for n in range(10):
        transport.send(SENDER, f"reader{n}@example.com", message())
        if n == 5:
            time.sleep(0.05)  # let the hang-up arrive first: noticed before writing, not after
    assert len(server.messages) == 10
    assert server.connections == 4
    assert transport.connections_opened == 4


def test_a_connection_lost_mid_transaction_is_retried_once(start_server, connect) -> None:
    server = start_server(replies={"trap@example.com": DISCONNECT})
    transport = connect(server)
    transport.send(SENDER, "ann@example.com", message())
    with pytest.raises(TemporaryDeliveryError) as lost:
        transport.send(SENDER, "trap@example.com", message())
    assert lost.value.code is None and "lost twice" in str(lost.value)
    assert isinstance(lost.value, ConnectionLost) and not lost.value.maybe_accepted  # safe to send elsewhere
    assert server.connections == 2  # the first, then exactly one retry
    transport.send(SENDER, "bob@example.com", message())
    assert server.connections == 3
    assert [m.rcpt_tos for m in server.messages] == [("ann@example.com",), ("bob@example.com",)]


def test_a_connection_lost_after_the_message_was_sent_is_not_retried(start_server, connect) -> None:
    server = start_server(data_replies={"late@example.com": DISCONNECT})
    transport = connect(server)
    with pytest.raises(TemporaryDeliveryError) as lost:
        transport.send(SENDER, "late@example.com", message())
    assert "may have been accepted" in str(lost.value)
    assert isinstance(lost.value, ConnectionLost) and lost.value.maybe_accepted  # never to be sent elsewhere now
    assert server.connections == 1
    transport.send(SENDER, "ann@example.com", message())
    assert server.connections == 2


def test_421_drops_the_connection(start_server, connect) -> None:
    server = start_server(replies={"closing@example.com": "421 4.7.0 Too busy, closing connection"})
    transport = connect(server)
    with pytest.raises(TemporaryDeliveryError) as closing:
        transport.send(SENDER, "closing@example.com", message())
    assert closing.value.code == 421
    transport.send(SENDER, "ann@example.com", message())
    assert server.connections == 2


def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = SmtpTransport(SmtpSettings("127.0.0.1", port), timeout=5)
    with pytest.raises(TemporaryDeliveryError) as refused:
        transport.send(SENDER, "ann@example.com", message())
    assert refused.value.code is None
    assert f"127.0.0.1:{port}" in str(refused.value) and "refused" in str(refused.value)


def test_international_addresses_and_8bit_content(start_server, connect) -> None:
    utf8_server = start_server()
    transport = connect(utf8_server)
    transport.send(SENDER, "josé@example.com", message())
    assert utf8_server.messages[0].rcpt_tos == ("josé@example.com",)
    assert "SMTPUTF8" in utf8_server.messages[0].mail_options
    transport.send(SENDER, "ann@example.com", "Subject: x\r\n\r\nCaf\u00e9\r\n".encode())
    assert "BODY=8BITMIME" in utf8_server.messages[1].mail_options
    assert "SMTPUTF8" not in utf8_server.messages[1].mail_options

    ascii_server = start_server(smtputf8=False)
    transport = connect(ascii_server)
    with pytest.raises(PermanentDeliveryError, match="SMTPUTF8") as error:
        transport.send(SENDER, "josé@example.com", message())
    assert error.value.code is None and not is_unknown_user(error.value)
    transport.send(SENDER, "ann@bücher.example", message())  # only the domain: sent as its A-label
    assert ascii_server.messages[0].rcpt_tos == ("ann@xn--bcher-kva.example",)
    with pytest.raises(InvalidInput):
        transport.send("nöreply@example.org", "ann@example.com", message())


def test_addresses_cannot_inject_commands(start_server, connect) -> None:
    server = start_server()
    transport = connect(server)
    for bad in ("ann@example.com>\r\nRCPT TO:<eve@example.com", "ann@example.com\n", "no-at-sign", ""):
        with pytest.raises(PermanentDeliveryError):
            transport.send(SENDER, bad, message())
    with pytest.raises(InvalidInput):
        transport.send("news@example.org>\r\nRSET", "ann@example.com", message())
    transport.send("", "ann@example.com", message())  # the null reverse-path is fine
    assert [(m.mail_from, m.rcpt_tos) for m in server.messages] == [("", ("ann@example.com",))]


def test_auth_login(start_server, connect) -> None:
    server = start_server(credentials=("mailer", "s3cret"))
    connect(server, username="mailer", password="s3cret").send(SENDER, "ann@example.com", message())
    assert len(server.messages) == 1
    with pytest.raises(TemporaryDeliveryError, match="login as mailer failed: 535") as wrong:
        connect(server, username="mailer", password="wrong").send(SENDER, "ann@example.com", message())
    assert wrong.value.code is None
    with pytest.raises(PermanentDeliveryError, match="530"):  # no credentials configured
        connect(server).send(SENDER, "ann@example.com", message())


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def test_starttls_and_implicit_tls(start_server, connect, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    starttls = start_server(tls_context=server_context, credentials=("mailer", "s3cret"))
    for security in ("none", "starttls"):  # smtp:// upgrades when offered; smtp+starttls:// insists
        transport = connect(starttls, security=security, ssl_context=trusting, username="mailer", password="s3cret")
        transport.send(SENDER, "ann@example.com", message())
        transport.send(SENDER, "bob@example.com", message())
    assert [m.tls for m in starttls.messages] == [True] * 4
    assert starttls.connections == 2

    # smtp+starttls:// verifies the certificate: the system CAs do not know this one.
    with pytest.raises(TemporaryDeliveryError, match="certificate not trusted"):
        connect(starttls, security="starttls", username="mailer", password="s3cret").send(
            SENDER, "ann@example.com", message()
        )
    # smtp:// encrypts opportunistically (RFC 7435): better than the plain text it allows.
    connect(starttls, username="mailer", password="s3cret").send(SENDER, "cat@example.com", message())
    assert starttls.messages[-1].tls and starttls.messages[-1].rcpt_tos == ("cat@example.com",)

    plain = start_server()
    with pytest.raises(TemporaryDeliveryError, match="does not offer STARTTLS"):
        connect(plain, security="starttls", ssl_context=trusting).send(SENDER, "ann@example.com", message())

    implicit = start_server(tls_context=server_context, implicit_tls=True)
    transport = connect(implicit, security="tls", ssl_context=trusting)
    transport.send(SENDER, "ann@example.com", message())
    transport.send(SENDER, "bob@example.com", message())
    assert [m.tls for m in implicit.messages] == [True, True] and implicit.connections == 1


def test_enhanced_status() -> None:
    assert enhanced_status("5.1.1 User unknown") == "5.1.1"
    assert enhanced_status("550 5.1.1 User unknown") == "5.1.1"
    assert enhanced_status("2.0.0 Ok: queued as ABC") == "2.0.0"
    assert enhanced_status("4.7.28 rate limited") == "4.7.28"
    assert enhanced_status("User unknown") is None
    assert enhanced_status("5.1.1.2 odd") is None
    assert enhanced_status("") is None


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.1.1 The email account that you tried to reach does not exist", True),
        (550, "5.1.10 Recipient address has null MX", True),
        (553, "5.1.3 Bad recipient address syntax", True),
        (550, "5.7.1 Service unavailable; client host blocked", False),
        (550, "5.1.8 Bad sender's system address", False),
        (550, "Requested action not taken: mailbox unavailable", True),
        (550, "No such user here", True),
        (554, "No such user here", False),
        (552, "5.2.2 Mailbox full", False),
    ],
)
def test_is_unknown_user(code: int, text: str, expected: bool) -> None:
    error = PermanentDeliveryError(f"{code} {text} (in reply to RCPT TO command)", code=code)
    assert is_unknown_user(error) is expected


def test_a_sender_rejection_is_never_an_unknown_user() -> None:
    error = PermanentDeliveryError("550 5.1.1 Sender unknown (in reply to MAIL FROM command)", code=550)
    assert not is_unknown_user(error)


def test_capture_server_writes_a_maildir_and_a_summary(tmp_path: Path, start_server, connect) -> None:
    lines: list[str] = []
    server = start_server(maildir=tmp_path / "outbox", on_message=lambda m: lines.append(m.summary()))
    data = message("=?utf-8?q?Caf=C3=A9_news?=", body=("x" * 98 + "\r\n") * 20)
    connect(server).send(SENDER, "ann@example.com", data)
    captured = server.messages[0]
    assert captured.path is not None and captured.path.parent == tmp_path / "outbox" / "new"
    assert captured.path.name.endswith(".ann@example.com.eml")
    stored = mailbox.Maildir(tmp_path / "outbox", create=False)
    [(_, stored_message)] = stored.items()
    assert stored_message["Return-Path"] == f"<{SENDER}>"
    assert stored_message["Subject"] == "=?utf-8?q?Caf=C3=A9_news?="
    assert captured.path.read_bytes().endswith(data)
    [line] = lines
    assert line.endswith(f" from {SENDER} to ann@example.com: Café news (2.0 KB)")


def test_capture_server_reports_a_busy_port_at_once(start_server) -> None:
    server = start_server()
    started = time.monotonic()
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        CaptureServer(port=server.port).start()
    assert time.monotonic() - started < 2
