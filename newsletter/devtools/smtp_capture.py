"""A development SMTP server that keeps every message it receives.

:class:`CaptureServer` runs aiosmtpd in a background thread. Every accepted message is
appended to :attr:`CaptureServer.messages` and, with a ``maildir``, written as one ``.eml``
file under ``maildir/new`` (a valid Maildir, so ``mutt -f`` opens it too, and any mail
program opens a single file). ``newsletter smtp-capture`` runs :func:`main_loop`.

For tests of retries, bounces and reconnects it can misbehave on purpose: answer chosen
recipients with a chosen reply (``replies``), reject chosen messages after their content
(``data_replies``), hang up without a word (:data:`DISCONNECT`), or hang up after every
N messages on a connection (``disconnect_after``). It advertises PIPELINING, which
aiosmtpd handles (it reads one command line at a time and answers in order) but does not
advertise by itself.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import os
import re
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from newsletter.mail.smtp_listener import BoundController, listen
from newsletter.until_stopped import wait_until_stopped

log = logging.getLogger(__name__)

__all__ = ["DISCONNECT", "CaptureServer", "CapturedMessage", "main_loop"]

#: A reply that is no reply: the server closes the connection without answering.
DISCONNECT = "disconnect"

DEFAULT_DATA_SIZE_LIMIT = 64 * 1024 * 1024
_REPLY_LINE = re.compile(r"[2-5]\d\d(?: .*)?\Z", re.DOTALL)
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")
_header_parser = email.parser.BytesParser(policy=email.policy.default)


@dataclass(frozen=True)
class CapturedMessage:
    """One message as the server received it (``data`` without dot-stuffing).

    ``mail_from`` is "" for the null reverse-path (``MAIL FROM:<>``).
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: datetime
    #: MAIL FROM parameters as sent, upper-cased: ("SIZE=1234", "BODY=8BITMIME", "SMTPUTF8").
    mail_options: tuple[str, ...] = ()
    #: The .eml file, when the server writes a maildir.
    path: Path | None = None
    #: Whether the message came over TLS (STARTTLS or implicit).
    tls: bool = False

    @property
    def subject(self) -> str:
        """The decoded Subject header, or "" when there is none or it cannot be parsed."""
        try:
            value = _header_parser.parsebytes(self.data, headersonly=True).get("subject")
        except Exception:  # a development tool: show what we can, never fail on odd input
            return ""
        return " ".join(str(value).split()) if value is not None else ""

    def summary(self) -> str:
        """One line for a person: ``12:01:02 from a@x.org to b@y.com: Subject (22.1 KB)``."""
        subject = self.subject or "(no subject)"
        if len(subject) > 80:
            subject = subject[:79] + "…"
        to = ", ".join(self.rcpt_tos[:3]) + (f" and {len(self.rcpt_tos) - 3} more" if len(self.rcpt_tos) > 3 else "")
        when = self.received_at.astimezone().strftime("%H:%M:%S")
        return f"{when} from {self.mail_from or '<>'} to {to}: {subject} ({_size(len(self.data))})"


class CaptureServer:
    """An aiosmtpd server in a background thread that keeps what it receives.

    ``port=0`` picks a free port; :attr:`port` is the real one once started.
    ``replies`` maps a recipient address (any case) to the reply to its RCPT TO, e.g.
    ``{"gone@example.com": "550 5.1.1 User unknown"}``; ``data_replies`` does the same at
    end of DATA for messages to that recipient (a 2xx one keeps the message). Either
    may map to :data:`DISCONNECT`; both are plain dicts that may be changed while the
    server runs. ``disconnect_after=N`` closes each connection right
    after its Nth accepted message. ``on_message`` is called, in the server's thread,
    with each kept message.

    Test knobs: ``pipelining`` and ``smtputf8`` say whether those extensions are
    offered; ``tls_context`` (a server context) offers STARTTLS, or with
    ``implicit_tls=True`` wraps every connection in TLS; ``credentials`` (user,
    password) makes AUTH required (also over plain text, since this server is local).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        maildir: Path | None = None,
        *,
        replies: Mapping[str, str] | None = None,
        on_message: Callable[[CapturedMessage], object] | None = None,
        data_replies: Mapping[str, str] | None = None,
        disconnect_after: int | None = None,
        pipelining: bool = True,
        smtputf8: bool = True,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        data_size_limit: int | None = DEFAULT_DATA_SIZE_LIMIT,
    ) -> None:
        if disconnect_after is not None and disconnect_after < 1:
            raise ValueError("disconnect_after must be at least 1")
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        self.host = host
        self.port = port
        self.maildir = Path(maildir) if maildir is not None else None
        self.replies = _check_replies("replies", replies)
        self.data_replies = _check_replies("data_replies", data_replies)
        self.on_message = on_message
        self.disconnect_after = disconnect_after
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.credentials = credentials
        self.data_size_limit = data_size_limit
        #: Every kept message, in order of arrival. Appended under a lock from the server thread.
        self.messages: list[CapturedMessage] = []
        self._lock = threading.Lock()
        self._connections = 0
        self._sequence = 0
        self._controller: _Controller | None = None

    @property
    def connections(self) -> int:
        """How many connections the server has accepted since :meth:`start`."""
        return self._connections

    def start(self) -> None:
        """Listen and serve in a background thread.

        Raises OSError when the address cannot be listened on (port in use, bad host),
        RuntimeError if already started.
        """
        if self._controller is not None:
            raise RuntimeError("the capture server is already running")
        if self.maildir is not None:
            for sub in ("tmp", "new", "cur"):
                (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        sock = listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        kwargs: dict[str, Any] = {
            "data_size_limit": self.data_size_limit,
            "enable_SMTPUTF8": self.smtputf8,
            "ident": "newsletter smtp-capture",
        }
        if self.tls_context is not None and not self.implicit_tls:
            kwargs["tls_context"] = self.tls_context
        if self.credentials is not None:
            # AUTH is enforced in handle_MAIL: aiosmtpd's auth_required warns when TLS is optional.
            kwargs.update(auth_require_tls=False, authenticator=self._authenticate)
        controller = _Controller(
            self,
            sock,
            _Handler(self),
            hostname=self.host or None,
            port=self.port,
            ssl_context=self.tls_context if self.implicit_tls else None,
            server_hostname=socket.gethostname(),  # else aiosmtpd calls getfqdn() on every connection
            **kwargs,
        )
        controller.start()
        self._controller = controller
        self._connections = 0  # forget aiosmtpd's own readiness probe

    def stop(self) -> None:
        """Stop serving and close the listening socket. Raises nothing; no-op if stopped."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> CaptureServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- called from the server's thread -------------------------------------------------

    def _connection_made(self) -> None:
        with self._lock:
            self._connections += 1

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self.credentials is not None
        user, password = self.credentials
        ok = isinstance(auth_data, LoginPassword) and auth_data == (user.encode(), password.encode())
        return AuthResult(success=ok, handled=False)

    def _keep(self, envelope: Envelope, *, tls: bool) -> CapturedMessage:
        data = envelope.original_content or b""
        received_at = datetime.now(UTC)
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        path = self._write_file(envelope, data, received_at, sequence) if self.maildir is not None else None
        message = CapturedMessage(
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            received_at=received_at,
            mail_options=tuple(envelope.mail_options),
            path=path,
            tls=tls,
        )
        with self._lock:
            self.messages.append(message)
        if self.on_message is not None:
            try:
                self.on_message(message)
            except Exception:
                log.exception("on_message failed for the message to %s", ", ".join(message.rcpt_tos))
        return message

    def _write_file(self, envelope: Envelope, data: bytes, received_at: datetime, sequence: int) -> Path:
        """Write the message into the maildir the Maildir way: into tmp/, then renamed into new/."""
        assert self.maildir is not None
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else "nobody"
        name = (
            f"{received_at.astimezone():%Y%m%dT%H%M%S.%f}.P{os.getpid()}Q{sequence}."
            f"{_FILE_NAME_UNSAFE.sub('_', first)[:60]}.eml"
        )
        # Trace lines as a delivering MTA adds them: the envelope is otherwise lost in a file.
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        trace = f"Return-Path: <{sender}>\r\n" + "".join(f"Delivered-To: {rcpt}\r\n" for rcpt in envelope.rcpt_tos)
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(trace.encode("utf-8", "surrogateescape") + data)
        final = self.maildir / "new" / name
        os.replace(tmp, final)
        return final


class _Handler:
    """aiosmtpd hooks; each runs in the server's event loop thread."""

    def __init__(self, capture: CaptureServer) -> None:
        self.capture = capture

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must do what aiosmtpd otherwise does
        if self.capture.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.capture.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = _lookup(self.capture.replies, address)
        if reply == DISCONNECT:
            await _hang_up(server)
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = next((r for r in (_lookup(self.capture.data_replies, a) for a in envelope.rcpt_tos) if r), None)
        if reply == DISCONNECT:
            await _hang_up(server)
        if reply is not None and not reply.startswith("2"):
            return reply
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        self.capture._keep(envelope, tls=tls)
        limit = self.capture.disconnect_after
        if limit is not None:
            count = getattr(session, "newsletter_captured", 0) + 1
            session.newsletter_captured = count  # type: ignore[attr-defined]  # our counter, kept on aiosmtpd's Session
            if count >= limit and server.transport is not None:
                # After the reply below is written: close() flushes it, then sends FIN.
                asyncio.get_running_loop().call_soon(server.transport.close)
        return reply or "250 2.0.0 OK: captured"


async def _hang_up(server: SMTP) -> None:
    """Close the connection without a reply. The hook is cancelled when the connection goes."""
    if server.transport is not None:
        server.transport.close()
    await asyncio.sleep(3600)


class _Controller(BoundController):
    """The capture server's controller: it counts connections."""

    def __init__(self, capture: CaptureServer, sock: socket.socket, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(sock, handler, **kwargs)
        self._capture = capture

    def factory(self) -> SMTP:
        self._capture._connection_made()
        return SMTP(self.handler, **self.SMTP_kwargs)


def _check_replies(name: str, replies: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for address, reply in (replies or {}).items():
        if reply != DISCONNECT and not _REPLY_LINE.match(reply):
            raise ValueError(
                f"{name}[{address!r}]: expected an SMTP reply like '550 5.1.1 User unknown', got {reply!r}"
            )
        checked[address.lower()] = reply
    return checked


def _lookup(replies: Mapping[str, str], address: str) -> str | None:
    # Keys are lower-cased when given to __init__, but tests may add to the dict later.
    return replies.get(address) or replies.get(address.lower())


def _size(octets: int) -> str:
    if octets < 1024:
        return f"{octets} B"
    if octets < 1024 * 1024:
        return f"{octets / 1024:.1f} KB"
    return f"{octets / (1024 * 1024):.1f} MB"


def main_loop(host: str = "127.0.0.1", port: int = 1025, maildir: Path | None = None) -> None:
    """Run a capture server until Ctrl-C or SIGTERM, printing one line per message to stdout.

    A start-up line goes to stderr. Raises OSError when host:port cannot be listened on.
    """
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    server = CaptureServer(host, port, maildir, on_message=lambda message: print(message.summary(), flush=True))
    server.start()
    where = f"[{host}]" if ":" in host else (host or "*")
    saving = f", saving each message under {maildir / 'new'}" if maildir is not None else ""
    print(f"Capturing mail on {where}:{server.port}{saving}. Ctrl-C to stop.", file=sys.stderr, flush=True)
    wait_until_stopped(server.stop)
    print(f"Stopped; {len(server.messages)} message(s) captured.", file=sys.stderr, flush=True)
