"""Test copies of an issue: "[TEST]" in the subject, mailed now to a few addresses, never logged.

An editor checks an issue in real mail clients before sending it. Every address is
checked before anything is mailed (one bad address: nothing is sent), the issue is
rendered and compiled once, and the copies go out over one SMTP connection. Each
address gets its own result: a refusal of one address does not stop the others.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.content.issues import RenderSettings, get_issue
from newsletter.delivery.ports import Claimed
from newsletter.delivery.sending import RecipientLinks, message_headers
from newsletter.errors import DeliveryError, InvalidInput, TemporaryDeliveryError
from newsletter.mail.messages import CompiledMessage, Recipient
from subscribers.addresses import normalise_email
from subscribers.tokens import TokenSigner

#: At most this many addresses per test: enough for a few colleagues and mail clients,
#: too few to turn test sends into an unlogged way of mailing a list.
MAX_TEST_ADDRESSES = 10

_SEPARATORS = re.compile(r"[\s,;]+")


def split_addresses(text: str) -> list[str]:
    """The addresses of a form field, separated by commas, semicolons or white space."""
    return [part for part in _SEPARATORS.split(text) if part]


def checked_addresses(raw: Sequence[str]) -> list[str]:
    """The addresses normalised, in the order given, each once.

    Raises InvalidInput naming the first address that is not one, when none is given,
    or when there are more than :data:`MAX_TEST_ADDRESSES`.
    """
    addresses: list[str] = []
    for value in raw:
        try:
            address = normalise_email(value)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc.message}; nothing was sent, fix that address and try again") from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InvalidInput("give the address (or addresses) the test goes to")
    if len(addresses) > MAX_TEST_ADDRESSES:
        raise InvalidInput(
            f"{len(addresses)} addresses given; a test goes to at most {MAX_TEST_ADDRESSES}. "
            "Nothing was sent: send to fewer addresses, or send the issue to a list of testers"
        )
    return addresses


def compile_test_copies(
    session: Session, issue_id: int, to: Sequence[str], settings: RenderSettings, signer: TokenSigner
) -> tuple[CompiledMessage, list[Recipient]]:
    """The issue rendered once, "[TEST]" in its subject, and one recipient per address of ``to``.

    Nothing is logged. Raises InvalidInput (see :func:`checked_addresses`), NotFound, RenderError.
    """
    addresses = checked_addresses(to)
    issue, mailing_list = get_issue(session, issue_id)
    rendered = settings.render(issue, mailing_list)
    headers = message_headers(
        mailing_list,
        subject=f"[TEST] {rendered.subject}",
        message_id_tag=f"test.{int(time.time() * 1000):x}",
        feedback_id=f"test:{mailing_list.slug}:newsletter",
    )
    message = CompiledMessage(headers, rendered.html, rendered.text)
    links = RecipientLinks(signer, settings.links)
    # Numbered from 1 so that each copy has a Message-ID of its own.
    recipients = [
        links.recipient(message, mailing_list.id, issue.id, Claimed(number, 0, address, "", 0))
        for number, address in enumerate(addresses, start=1)
    ]
    return message, recipients


@dataclass(frozen=True)
class CopyOutcome:
    """What became of one address's copy: ``sent``, or the reason it was not."""

    to: str
    sent: bool
    message_id: str
    smtp_code: int | None
    smtp_reply: str


def send_test_copies(
    message: CompiledMessage, recipients: Sequence[Recipient], settings: Settings, *, timeout: float = 30.0
) -> list[CopyOutcome]:
    """Hand each recipient's copy to the SMTP server now, over one connection, signed and with the
    envelope sender that mail other than a delivery gets; one result per recipient, in order.

    A refused address is reported and the others are still tried; once the connection fails,
    the addresses after it are reported as not tried. Raises DeliveryError when the server
    could not be reached for the first address (nothing was sent), and ConfigError for an
    unusable DKIM key.
    """
    from newsletter.mail.outbound import Outbound
    from newsletter.mail.transport import SmtpTransport

    outbound = Outbound.from_settings(settings)
    results: list[CopyOutcome] = []
    broken: str | None = None
    with SmtpTransport(settings.smtp, timeout=timeout) as transport:
        for recipient in recipients:
            message_id, data = message.build(recipient)
            if broken is not None:
                results.append(CopyOutcome(recipient.email, False, message_id, None, f"not tried: {broken}"))
                continue
            try:
                reply = transport.send(outbound.envelope_from(message), recipient.email, outbound.seal(data))
            except DeliveryError as exc:
                connection_failed = isinstance(exc, TemporaryDeliveryError) and exc.code is None
                if connection_failed and not results:
                    raise
                if connection_failed:
                    broken = f"the connection to the mail server failed before it ({exc})"
                results.append(CopyOutcome(recipient.email, False, message_id, exc.code, str(exc)))
                continue
            results.append(CopyOutcome(recipient.email, True, message_id, reply.code, reply.text))
    return results


def not_sent(results: Sequence[CopyOutcome]) -> str:
    """One sentence naming each address that got no copy, and why (empty when all were sent)."""
    return "; ".join(f"{r.to}: {r.smtp_reply}" for r in results if not r.sent)
