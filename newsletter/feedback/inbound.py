"""`newsletter inbound`: an SMTP server for bounces, complaints and List-Unsubscribe mail.

It answers only for our own addresses, refusing every other recipient at RCPT with 550:

* the VERP return paths ``bounces+d1234-<signature>@domain`` (when NEWSLETTER_RETURN_PATH
  is set; a forged or tampered signature is refused like a stranger's address),
* the bare return path itself (bounces from servers that drop the ``+tag``, and feedback
  loop reports, which go to a fixed address),
* ``unsubscribe+TOKEN@...``, the mailto address of every message's List-Unsubscribe header
  (a forged or foreign token is refused).

Each accepted message is classified (:mod:`newsletter.feedback.bounce_parsing`) and its events are
applied in one transaction (:func:`subscribers.bounces.record_bounce`), one log line per
event. An event acts only on proof that we mailed the address (a VERP address, the
original's Message-ID, a signed link of ours it quotes, the unsubscribe token); the bare
return path takes anyone's mail, so a report there without proof is stored as unproven
for review and changes nothing. A message it cannot classify is accepted and logged, never refused: refusing a
bounce only makes another bounce. When the database cannot be reached the answer is
451, so the sending server tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType

from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.errors import InvalidInput, NotFound
from newsletter.feedback.bounce_parsing import Mailboxes, Report, classify
from newsletter.mail.smtp_listener import BoundController, listen
from newsletter.store import db
from newsletter.store.models import Delivery, MailingList, Subscriber
from newsletter.store.states import BounceKind
from newsletter.until_stopped import wait_until_stopped
from subscribers.bounces import find_proof, record_bounce
from subscribers.tokens import TokenSigner

log = logging.getLogger(__name__)

__all__ = ["InboundServer", "Receiver", "mailboxes_for", "main_loop"]

DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024  # bounces quote the original; an issue is ~100 KB
MAX_RECIPIENTS = 50
REFUSED = "550 5.1.1 No such mailbox here: this server takes bounces and unsubscribe requests only"
TRY_LATER = "451 4.3.0 Temporary local problem, please try again later"


def mailboxes_for(settings: Settings, signer: TokenSigner) -> Mailboxes:
    """The addresses this installation answers for, with the keys that sign them.

    ``signer`` is the runtime's (newsletter.runtime): the settings' current and old secret keys.
    """
    return Mailboxes(
        return_path=settings.return_path,
        keys=(settings.secret_key, *settings.old_secret_keys),
        signer=signer,
    )


class Receiver:
    """Decides which recipients to take, classifies each message and applies its events."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        mailboxes: Mailboxes,
        *,
        soft_limit: int,
        soft_days: float,
        log_line: Callable[[str], object] = log.info,
    ) -> None:
        self.sessions = sessions
        self.mailboxes = mailboxes
        self.soft_limit = soft_limit
        self.soft_days = soft_days
        self.log_line = log_line

    def refuse(self, address: str) -> str | None:
        """The reply refusing ``address`` at RCPT, or None when it is one of ours."""
        return None if self.mailboxes.role(address) is not None else REFUSED

    def receive(self, data: bytes, mail_from: str, rcpt_tos: Sequence[str]) -> list[str]:
        """Classify one message and apply its events in one transaction; returns (and logs) one line per event.

        Raises SQLAlchemyError when the database cannot be reached (the caller answers 451);
        anything about the message itself is logged, not raised.
        """
        envelope = f"from <{mail_from}> to {', '.join(rcpt_tos)}"
        try:
            classification = classify(data, rcpt_tos, self.mailboxes)
        except Exception as exc:
            log.exception("could not read the message %s", envelope)
            lines = [f"unreadable message {envelope}: {exc!r}; kept no record"]
        else:
            if not classification.reports:
                lines = [f"{classification.verdict} {envelope}: {classification.note}; kept no record"]
            else:
                with db.transaction(self.sessions) as session:
                    lines = [
                        f"{classification.verdict}: {self._apply(session, report)}" for report in classification.reports
                    ]
        for line in lines:
            self.log_line(line)
        return lines

    def _apply(self, session: Session, report: Report) -> str:
        try:
            with session.begin_nested():  # one bad event leaves the others of the message standing
                if report.kind == BounceKind.UNSUBSCRIBE:
                    assert report.token is not None
                    claims = self.mailboxes.signer.verify(report.token, "unsubscribe")
                    subscriber = session.get(Subscriber, claims.subscriber_id)
                    mailing_list = session.get(MailingList, claims.list_id)
                    if subscriber is None or mailing_list is None:
                        raise NotFound("the token names a subscriber or list that no longer exists")
                    outcome = record_bounce(
                        session,
                        email=subscriber.email,
                        kind=BounceKind.UNSUBSCRIBE,
                        source="smtp",
                        list_id=mailing_list.id,
                        detail=f"{report.detail} for {mailing_list.slug}",
                        soft_limit=self.soft_limit,
                        soft_days=self.soft_days,
                        proof="its signed List-Unsubscribe mailto token",
                    )
                    return outcome.summary()
                delivery_id = report.delivery_id  # from our signed VERP address: proof in itself
                list_id = proof = None
                if delivery_id is not None and session.get(Delivery, delivery_id) is None:
                    delivery_id = None  # a signed address of a delivery since deleted: go by the report
                if delivery_id is None:
                    found = find_proof(session, email=report.email, message_id=report.message_id, signed=report.signed)
                    if found is not None:
                        delivery_id, list_id, proof = found.delivery_id, found.list_id, found.how
                outcome = record_bounce(
                    session,
                    email=report.email,
                    delivery_id=delivery_id,
                    kind=report.kind,
                    source="smtp",
                    detail=report.detail,
                    soft_limit=self.soft_limit,
                    soft_days=self.soft_days,
                    list_id=list_id,
                    proof=proof,
                )
                return outcome.summary() + (f" [{report.detail}]" if report.detail else "")
        except (InvalidInput, NotFound) as exc:
            return f"{report.kind} for {report.email or 'an unknown address'} not recorded: {exc}"


class InboundServer:
    """The receiving SMTP server in a background thread. ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self,
        receiver: Receiver,
        host: str = "127.0.0.1",
        port: int = 2525,
        *,
        data_size_limit: int = DEFAULT_SIZE_LIMIT,
    ) -> None:
        self.receiver = receiver
        self.host = host
        self.port = port
        self.data_size_limit = data_size_limit
        self._controller: BoundController | None = None

    def start(self) -> None:
        """Listen and serve in a background thread. Raises OSError (address in use), RuntimeError (already started)."""
        if self._controller is not None:
            raise RuntimeError("the inbound server is already running")
        sock = listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        controller = BoundController(
            sock,
            _Handler(self.receiver),
            hostname=self.host or None,
            port=self.port,
            server_hostname=socket.gethostname(),
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=True,
            ident="newsletter inbound",
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop serving. Raises nothing; no-op if stopped."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> InboundServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler:
    """aiosmtpd hooks, run in the server's event loop; the database work runs in a thread."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def handle_RCPT(
        self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.receiver.refuse(address)
        if refusal is not None:
            return refusal
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        mail_from = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)
        data = envelope.original_content or b""
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self.receiver.receive, data, mail_from, list(envelope.rcpt_tos)
            )
        except SQLAlchemyError as exc:
            log.error("database error, answered 451: %s", str(exc).splitlines()[0])
            return TRY_LATER
        except Exception:
            log.exception("error handling a message from <%s>", mail_from)
        return "250 2.0.0 OK"


def main_loop(
    receiver: Receiver,
    host: str = "127.0.0.1",
    port: int = 2525,
    *,
    data_size_limit: int = DEFAULT_SIZE_LIMIT,
    print_events: bool = True,
) -> None:
    """Serve until Ctrl-C or SIGTERM; a start-up line goes to stderr.

    One line per event goes to stdout, or with ``print_events=False`` to the log (for
    NEWSLETTER_LOG_FORMAT=json). Raises OSError when host:port cannot be listened on.
    """
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    logging.getLogger("flufl.bounce").setLevel(logging.WARNING)  # and flufl.bounce every detector it runs
    if print_events:
        receiver.log_line = lambda line: print(f"{datetime.now():%H:%M:%S} {line}", flush=True)
    else:
        receiver.log_line = log.info
    server = InboundServer(receiver, host, port, data_size_limit=data_size_limit)
    server.start()
    mailboxes = receiver.mailboxes
    where = f"[{host}]" if ":" in host else (host or "*")
    taking = f"{mailboxes.return_path} and its VERP forms, and " if mailboxes.return_path else ""
    print(
        f"Receiving mail on {where}:{server.port} for {taking}unsubscribe+TOKEN@ addresses. Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    wait_until_stopped(server.stop)
    print("Stopped.", file=sys.stderr, flush=True)
