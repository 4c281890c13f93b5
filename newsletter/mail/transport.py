"""The SMTP side of sending: one reused connection, two round trips per message.

:class:`SmtpTransport` hands one finished message to one recipient at a time to the
configured SMTP server. It is built on :mod:`smtplib` for connecting, TLS and AUTH, but
runs the mail transaction itself, because the hot path must cost microseconds:

* the connection is opened on the first :meth:`SmtpTransport.send` and kept for the
  next ones; a connection the server has dropped in between is noticed and replaced;
* with PIPELINING (RFC 2920) ``MAIL FROM``, ``RCPT TO`` and ``DATA`` go out in one
  write, so a message costs two round trips instead of four;
* the message is sent as given: the caller supplies the final wire form (CRLF line
  endings, dot-stuffed, lines under 998 octets), which smtplib's ``sendmail`` would
  otherwise re-scan with regular expressions on every message.

Errors follow :mod:`newsletter.errors`: connection trouble and 4xx replies raise
:class:`~newsletter.errors.TemporaryDeliveryError`, 5xx replies raise
:class:`~newsletter.errors.PermanentDeliveryError`, or its subclass
:class:`~newsletter.errors.UnknownRecipient` when the mailbox does not exist
(:func:`is_unknown_user`: the address is then suppressed). A rejection's message is the
server's reply followed by the command it answered, as Postfix words its bounces::

    550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown (in reply to RCPT TO command)

A transport is not thread-safe: give each worker thread or process its own.
"""

from __future__ import annotations

import logging
import re
import select
import smtplib
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

from newsletter.config import SmtpSettings
from newsletter.errors import (
    InvalidInput,
    PermanentDeliveryError,
    SmtpUnreachable,
    TemporaryDeliveryError,
    UnknownRecipient,
)

log = logging.getLogger(__name__)

__all__ = ["ConnectionLost", "SmtpReply", "SmtpTransport", "enhanced_status", "is_unknown_user", "reply_stage"]

# Stage names, worded as Postfix words them in bounces ("in reply to RCPT TO command").
MAIL_STAGE = "MAIL FROM"
RCPT_STAGE = "RCPT TO"
DATA_STAGE = "DATA"
END_STAGE = "end of DATA"

_ENHANCED = re.compile(r"\s*(?:\d{3}[ -]\s*)?([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
# Wording of "no such recipient" from servers that send no enhanced status code.
_UNKNOWN_USER_WORDING = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient|account)"
    r"|mailbox (?:unavailable|not found|does not exist)|unknown (?:recipient|mailbox)"
    r"|recipient (?:unknown|not found|does not exist)|(?:user|account|address) does not exist",
    re.IGNORECASE,
)
# RFC 3463 X.1.7 and X.1.8 are about the *sender's* address: never a reason to drop a subscriber.
_SENDER_ADDRESS_STATUSES = frozenset({"5.1.7", "5.1.8"})
# Characters that would let an address break out of "<...>" or out of the command line.
_BAD_ADDRESS_CHARS = re.compile(r"[\x00-\x20\x7f<>]")


@dataclass(frozen=True)
class SmtpReply:
    """One SMTP reply: ``SmtpReply(250, "2.0.0 Ok: queued as ABC")``."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text, e.g. ``"5.1.1"``.

    Accepts the text with or without the three-digit reply code in front
    (``"5.1.1 User unknown"`` and ``"550 5.1.1 User unknown"`` both give ``"5.1.1"``).
    Returns None when the text does not start with one. Raises nothing.
    """
    match = _ENHANCED.match(text)
    return match.group(1) if match else None


def is_unknown_user(error: PermanentDeliveryError) -> bool:
    """True when the server said the recipient's mailbox does not exist (a hard bounce).

    That is an RFC 3463 ``5.1.x`` status (bad destination mailbox or system, moved, null
    MX...; not 5.1.7/5.1.8, which are about the sender), or, when the reply carries no
    enhanced status code, a 550 worded like "User unknown", "No such user" or "Mailbox
    unavailable". A rejection of ``MAIL FROM`` is about the sender and never counts.
    Raises nothing.
    """
    message = str(error)
    if error.code is None or not 500 <= error.code < 600 or reply_stage(message) == MAIL_STAGE:
        return False
    status = enhanced_status(message)
    if status is not None:
        return status.startswith("5.1.") and status not in _SENDER_ADDRESS_STATUSES
    return error.code == 550 and _UNKNOWN_USER_WORDING.search(message) is not None


def reply_stage(message: str) -> str | None:
    """The stage named by the "(in reply to ... command)" suffix of a rejection message."""
    if message.endswith(" command)"):
        start = message.rfind("(in reply to ")
        if start != -1:
            return message[start + len("(in reply to ") : -len(" command)")]
    return None


class ConnectionLost(TemporaryDeliveryError):
    """The connection broke during a message (``code`` None), and could not be replaced at once.

    ``maybe_accepted`` is True when the whole message had been sent: the server may have
    accepted it, so it must not be handed to another server now (it could arrive twice).
    When False, the server never had the whole message: sending it elsewhere is safe.
    """

    def __init__(self, message: str, *, maybe_accepted: bool) -> None:
        super().__init__(message)
        self.maybe_accepted = maybe_accepted


class _ConnectionLost(Exception):
    """The connection broke in the middle of a transaction.

    ``body_sent`` is True once the whole message including its final dot is with the
    kernel: from then on the server may have accepted it, so repeating it at once
    could deliver it twice.
    """

    def __init__(self, reason: str, *, body_sent: bool) -> None:
        super().__init__(reason)
        self.body_sent = body_sent


class SmtpTransport:
    """Sends messages over one reused SMTP connection; see the module docstring.

    ``ssl_context`` replaces the default one (``ssl.create_default_context()``, which
    verifies the server's certificate against the system's CAs and its host name), e.g.
    to trust a private CA. ``pipelining=False`` sends one command at a time even when the
    server offers PIPELINING, for the rare server that advertises it but mishandles it.

    Use as a context manager, or call :meth:`close` when done. Nothing is connected
    until the first :meth:`send` (or :meth:`connect`). Raises ValueError for a
    ``security`` other than "none", "starttls" or "tls".
    """

    def __init__(
        self,
        smtp: SmtpSettings,
        *,
        local_hostname: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        pipelining: bool = True,
    ) -> None:
        if smtp.security not in ("none", "starttls", "tls"):
            raise ValueError(f"unknown SMTP security {smtp.security!r}; expected 'none', 'starttls' or 'tls'")
        self._settings = smtp
        self._where = f"{smtp.host}:{smtp.port}"
        self._local_hostname = local_hostname
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._allow_pipelining = pipelining
        self._conn: smtplib.SMTP | None = None
        self._poller: select.poll | None = None
        # Features of the current connection, read from its (last) EHLO reply.
        self._pipelining = False
        self._smtputf8 = False
        self._eightbitmime = False
        self._size_limit: int | None = None
        #: How many connections this transport has opened (for logs and tests).
        self.connections_opened = 0

    # -- public API ------------------------------------------------------------------

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def encrypted(self) -> bool:
        """Whether the open connection is encrypted (STARTTLS or implicit TLS); False when none is open."""
        return self._conn is not None and isinstance(self._conn.sock, ssl.SSLSocket)

    @property
    def pipelining(self) -> bool:
        """Whether the open connection pipelines MAIL/RCPT/DATA (False when none is open)."""
        return self._conn is not None and self._pipelining

    def connect(self) -> None:
        """Open the connection now rather than on the first :meth:`send`; no-op if open.

        Useful to check the settings. Raises TemporaryDeliveryError (code None) naming
        host:port and the reason when connecting, TLS or login fails.
        """
        if self._conn is None:
            self._open()

    def send(self, envelope_from: str, recipient: str, data: bytes) -> SmtpReply:
        """Hand one message for one recipient to the server; return its final reply.

        ``data`` must be the final wire form: CRLF line endings, dot-stuffed (no line
        starts with a single "."), lines under 998 octets. It is sent as is, followed by
        the end-of-data line. ``envelope_from`` may be "" (null reverse-path).

        Raises:
            TemporaryDeliveryError: a 4xx reply (``.code`` set), or the connection could
                not be opened (its subclass SmtpUnreachable) or was lost (its subclass
                ConnectionLost; ``.code`` None). A connection the server had dropped before
                the message was sent is replaced, and the message retried, once; if the
                connection breaks after the whole message was sent, the error says the
                server may have accepted it (``maybe_accepted``).
            PermanentDeliveryError: a 5xx reply (``.code`` set); or ``recipient`` is
                malformed, or needs SMTPUTF8 which the server does not offer (code None).
            InvalidInput: ``envelope_from`` is malformed or needs SMTPUTF8 which the
                server does not offer: no recipient can be sent to from it.
        """
        # The end-of-data line; the message must end with CRLF before it.
        payload = data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")
        for attempt in (1, 2):
            conn = self._connection()
            mail, rcpt = self._envelope(envelope_from, recipient, data)
            try:
                return self._transaction(conn, mail, rcpt, payload)
            except _ConnectionLost as lost:
                self._drop()
                if lost.body_sent:
                    raise ConnectionLost(
                        f"connection to {self._where} lost after the message to {recipient} was sent, "
                        f"before the server confirmed it (it may have been accepted): {lost}",
                        maybe_accepted=True,
                    ) from None
                if attempt == 2:
                    raise ConnectionLost(
                        f"connection to {self._where} lost twice while sending to {recipient}: {lost}",
                        maybe_accepted=False,
                    ) from None
                log.info("SMTP connection to %s lost (%s); reconnecting", self._where, lost)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open. Raises nothing."""
        conn, self._conn = self._conn, None
        self._poller = None
        if conn is None:
            return
        try:
            if conn.sock is not None:
                # Do not let a hung server hold the caller for the whole send timeout.
                conn.sock.settimeout(min(self._timeout, 5.0))
                conn.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            conn.close()

    # -- connection ------------------------------------------------------------------

    def _connection(self) -> smtplib.SMTP:
        """The open connection, or a new one if there is none or the old one went stale."""
        conn = self._conn
        if conn is not None and self._stale(conn):
            log.info("SMTP connection to %s was closed by the server; reconnecting", self._where)
            self._drop()
            conn = None
        return conn if conn is not None else self._open()

    def _stale(self, conn: smtplib.SMTP) -> bool:
        """True if the idle connection has anything to read: EOF, a reset or a 421 goodbye.

        Between transactions a server says nothing unless it is closing the connection
        (idle timeout: Postfix sends "421 4.4.2 Error: timeout exceeded" and hangs up), so
        checking costs one poll() and spares a failed round trip.
        """
        sock = conn.sock
        if sock is None or self._poller is None:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            return bool(self._poller.poll(0))
        except OSError:
            return True

    def _open(self) -> smtplib.SMTP:
        """Connect, say EHLO, start TLS and log in as the settings say. Raises SmtpUnreachable."""
        context = self._ssl_context or ssl.create_default_context()
        conn: smtplib.SMTP | None = None
        try:
            conn = self._connect(context)
            # smtplib looks the name up (getfqdn(), possibly slow DNS) when none is given: once is enough.
            self._local_hostname = conn.local_hostname
            assert conn.sock is not None
            # We always write whole commands or whole messages, so Nagle's algorithm can
            # only delay the tail of a message (up to a delayed-ACK timeout) and never
            # saves a packet.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._hello(conn)
            self._starttls(conn, context)
            if self._settings.username:
                self._login(conn)
        except TemporaryDeliveryError:
            if conn is not None:
                conn.close()
            raise
        except ssl.SSLCertVerificationError as exc:
            if conn is not None:
                conn.close()
            raise self._connect_error(f"TLS certificate not trusted: {exc.verify_message}") from None
        except (OSError, smtplib.SMTPException) as exc:
            if conn is not None:
                conn.close()
            raise self._connect_error(_describe(exc)) from None
        self._adopt(conn)
        return conn

    def _connect(self, context: ssl.SSLContext) -> smtplib.SMTP:
        """A new connection, greeted; implicit TLS for smtps://."""
        settings = self._settings
        try:
            if settings.security == "tls":
                return smtplib.SMTP_SSL(
                    settings.host,
                    settings.port,
                    local_hostname=self._local_hostname,
                    timeout=self._timeout,
                    context=context,
                )
            return smtplib.SMTP(
                settings.host, settings.port, local_hostname=self._local_hostname, timeout=self._timeout
            )
        except smtplib.SMTPConnectError as exc:
            raise self._connect_error(f"greeted with {_reply_text(exc.smtp_code, exc.smtp_error)}") from None

    def _starttls(self, conn: smtplib.SMTP, context: ssl.SSLContext) -> None:
        """STARTTLS when the settings require it (smtp+starttls://) or the server offers it (smtp://)."""
        security = self._settings.security
        if not (security == "starttls" or (security == "none" and conn.has_extn("starttls"))):
            return
        if not conn.has_extn("starttls"):
            raise self._connect_error(
                "the server does not offer STARTTLS, which the settings require "
                "(smtp+starttls://); use smtp:// to allow plain text"
            )
        if security == "none" and self._ssl_context is None:
            # Opportunistic TLS (RFC 7435, Postfix's "may"): smtp:// allowed plain
            # text, so encrypting without checking the certificate is strictly
            # better than not encrypting; smtp+starttls:// verifies it.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            conn.starttls(context=context)
        except smtplib.SMTPResponseException as exc:
            raise self._connect_error(f"STARTTLS refused: {_reply_text(exc.smtp_code, exc.smtp_error)}") from None
        self._hello(conn)

    def _adopt(self, conn: smtplib.SMTP) -> None:
        """Keep the new connection, with the features its EHLO reply offered."""
        assert conn.sock is not None
        self._conn = conn
        self._poller = select.poll()
        self._poller.register(conn.sock.fileno(), select.POLLIN | select.POLLPRI)
        features = conn.esmtp_features if conn.does_esmtp else {}
        self._pipelining = self._allow_pipelining and "pipelining" in features
        self._smtputf8 = "smtputf8" in features
        self._eightbitmime = "8bitmime" in features
        size = features.get("size", "").strip()
        self._size_limit = int(size) if size.isdigit() and int(size) > 0 else None
        self.connections_opened += 1
        log.debug(
            "SMTP connection to %s open (%s, pipelining=%s)",
            self._where,
            "TLS" if isinstance(conn.sock, ssl.SSLSocket) else "plain text",
            self._pipelining,
        )

    def _hello(self, conn: smtplib.SMTP) -> None:
        code, text = conn.ehlo()
        if code != 250:
            code, text = conn.helo()
            if code != 250:
                raise self._connect_error(f"HELO refused: {_reply_text(code, text)}")

    def _login(self, conn: smtplib.SMTP) -> None:
        username = self._settings.username or ""
        try:
            conn.login(username, self._settings.password or "")
        except smtplib.SMTPNotSupportedError:
            raise self._connect_error(
                f"a username ({username}) is set but the server does not offer AUTH"
                + ("" if isinstance(conn.sock, ssl.SSLSocket) else " over a plain-text connection")
            ) from None
        except smtplib.SMTPException as exc:
            if isinstance(exc, smtplib.SMTPResponseException):
                reason = _reply_text(exc.smtp_code, exc.smtp_error)
            else:
                reason = str(exc)
            raise self._connect_error(f"login as {username} failed: {reason}") from None

    def _connect_error(self, reason: str) -> SmtpUnreachable:
        # Connection-level trouble (even a 535 from AUTH) is never the recipient's fault:
        # temporary, so the send waits and tries again until the server (or its settings) is fixed.
        return SmtpUnreachable(f"cannot connect to SMTP server {self._where}: {reason}")

    def _drop(self) -> None:
        """Forget the connection without QUIT: it is broken or the server is closing it."""
        conn, self._conn = self._conn, None
        self._poller = None
        if conn is not None:
            conn.close()

    # -- transaction -----------------------------------------------------------------

    def _envelope(self, envelope_from: str, recipient: str, data: bytes) -> tuple[bytes, bytes]:
        """The MAIL and RCPT command lines for this message on this connection."""
        sender, sender_utf8 = self._address(envelope_from, recipient=False)
        rcpt, rcpt_utf8 = self._address(recipient, recipient=True)
        params = ""
        if self._size_limit is not None:
            params += f" SIZE={len(data)}"
        smtputf8 = sender_utf8 or rcpt_utf8
        if not data.isascii():
            if self._eightbitmime:
                params += " BODY=8BITMIME"
            # Raw UTF-8 in the header (RFC 6532) needs SMTPUTF8; in the body, 8BITMIME is enough.
            end = data.find(b"\r\n\r\n")
            if self._smtputf8 and not data[: end if end != -1 else len(data)].isascii():
                smtputf8 = True
        if smtputf8:
            params += " SMTPUTF8"
        encoding = "utf-8" if smtputf8 else "ascii"
        return (
            f"MAIL FROM:<{sender}>{params}\r\n".encode(encoding),
            f"RCPT TO:<{rcpt}>\r\n".encode(encoding),
        )

    def _address(self, address: str, *, recipient: bool) -> tuple[str, bool]:
        """The address as it goes on the wire, and whether it needs SMTPUTF8."""
        if _BAD_ADDRESS_CHARS.search(address) or (recipient and "@" not in address):
            self._bad_address(address, recipient, "not a valid address")
        if address.isascii():
            return address, False
        if self._smtputf8:
            return address, True
        local, _, domain = address.rpartition("@")
        if local.isascii():
            # Only the domain is international: its A-label form needs no extension.
            try:
                return f"{local}@{_idna(domain)}", False
            except UnicodeError:
                self._bad_address(address, recipient, "the domain is not a valid international domain name")
        self._bad_address(
            address, recipient, f"a non-ASCII local part needs SMTPUTF8, which {self._where} does not offer"
        )

    def _bad_address(self, address: str, recipient: bool, reason: str) -> NoReturn:
        if recipient:
            raise PermanentDeliveryError(f"recipient {address!r}: {reason}")
        raise InvalidInput(f"{address!r}: {reason}", where="envelope sender")

    def _transaction(self, conn: smtplib.SMTP, mail: bytes, rcpt: bytes, payload: bytes) -> SmtpReply:
        """One mail transaction. Raises _ConnectionLost or a delivery error."""
        body_sent = False
        try:
            if self._pipelining:
                self._write(conn, mail + rcpt + b"DATA\r\n")
                # Read each reply before the next: after a 421 the server may be gone.
                replies: list[tuple[str, int, str]] = []
                for stage in (MAIL_STAGE, RCPT_STAGE, DATA_STAGE):
                    code, text = self._read(conn)
                    if code == 421:
                        self._closing(stage, code, text)
                    replies.append((stage, code, text))
                data_accepted = replies[2][1] == 354
                failed = next((r for r in replies[:2] if not 200 <= r[1] < 300), None)
                if failed is None and not data_accepted:
                    failed = replies[2]
                if failed is not None:
                    if data_accepted:
                        # A server that said 354 after refusing MAIL or RCPT (it should not):
                        # end the empty message; its reply says nothing we need (RFC 2920 3.1).
                        log.warning("%s accepted DATA after rejecting %s", self._where, failed[0])
                        self._write(conn, b".\r\n")
                        self._read(conn)
                    self._fail(conn, *failed)
            else:
                for stage, command in ((MAIL_STAGE, mail), (RCPT_STAGE, rcpt), (DATA_STAGE, b"DATA\r\n")):
                    self._write(conn, command)
                    code, text = self._read(conn)
                    if code == 421:
                        self._closing(stage, code, text)
                    expected = (code == 354) if stage == DATA_STAGE else (200 <= code < 300)
                    if not expected:
                        self._fail(conn, stage, code, text)
            self._write(conn, payload)
            body_sent = True
            code, text = self._read(conn)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _ConnectionLost(_describe(exc), body_sent=body_sent) from None
        except smtplib.SMTPResponseException as exc:  # a reply line longer than 8 KB
            self._drop()
            raise TemporaryDeliveryError(
                f"{self._where} sent an invalid reply: {_reply_text(exc.smtp_code, exc.smtp_error)}"
            ) from None
        if 200 <= code < 300:
            return SmtpReply(code, text)
        if code == 421:
            self._closing(END_STAGE, code, text)
        self._fail(conn, END_STAGE, code, text)

    def _write(self, conn: smtplib.SMTP, data: bytes) -> None:
        sock = conn.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        sock.sendall(data)

    def _read(self, conn: smtplib.SMTP) -> tuple[int, str]:
        code, text = conn.getreply()
        return code, text.decode("utf-8", "replace").replace("\n", " ")

    def _closing(self, stage: str, code: int, text: str) -> NoReturn:
        """The server said 421: it is closing the connection. Raises TemporaryDeliveryError."""
        self._drop()
        raise TemporaryDeliveryError(_rejection(stage, code, text), code=code)

    def _fail(self, conn: smtplib.SMTP, stage: str, code: int, text: str) -> NoReturn:
        """End a refused transaction with RSET, then raise the matching delivery error."""
        if 400 <= code < 600:
            error: TemporaryDeliveryError | PermanentDeliveryError
            if code < 500:
                error = TemporaryDeliveryError(_rejection(stage, code, text), code=code)
            else:
                error = PermanentDeliveryError(_rejection(stage, code, text), code=code)
                if is_unknown_user(error):
                    error = UnknownRecipient(str(error), code=code)
            try:
                self._write(conn, b"RSET\r\n")
                rset_code, _ = self._read(conn)
            except (OSError, smtplib.SMTPException):
                rset_code = -1
            if rset_code != 250:
                self._drop()
            raise error
        # Not a reply a server may give here: we no longer know the session's state.
        self._drop()
        raise TemporaryDeliveryError(
            f"{self._where} answered {stage} with an unexpected reply: {_reply_text(code, text)}"
        )


def _rejection(stage: str, code: int, text: str) -> str:
    return f"{code} {text} (in reply to {stage} command)"


def _reply_text(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".replace("\n", " ").strip()


def _describe(exc: BaseException) -> str:
    """A short reason for a socket or smtplib exception ("Connection refused", "timed out")."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _idna(domain: str) -> str:
    """A domain name's ASCII (A-label) form. Raises UnicodeError for an invalid name."""
    try:
        import idna  # IDNA 2008, installed with email-validator
    except ImportError:  # pragma: no cover
        return domain.encode("idna").decode("ascii")
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise UnicodeError(str(exc)) from None
