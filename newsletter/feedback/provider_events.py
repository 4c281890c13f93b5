"""Bounce, delay and complaint events reported by mail providers over HTTP: Amazon SES (through SNS) and a generic JSON form.

**Amazon SES through SNS.** SNS POSTs a JSON envelope. Before anything is believed:

1. its ``TopicArn`` must be one of NEWSLETTER_SES_TOPIC_ARNS;
2. its ``SigningCertURL`` must be ``https://sns.<region>.amazonaws.com/....pem``;
3. its ``Signature`` must verify, with that certificate's public key, over the canonical
   string of its type (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA).

Anything else raises :class:`SnsRejected` (HTTP 403). So does a ``Notification`` whose
signed ``Timestamp`` is older than NEWSLETTER_SES_MAX_AGE (:class:`SnsTooOld`): a
notification captured once must not be replayed later. A ``SubscriptionConfirmation`` is
then confirmed by fetching its ``SubscribeURL`` (which must be on the same SNS host
pattern); a ``Notification`` carries an SES message: ``Bounce`` (``Permanent`` is hard,
``Transient`` and ``Undetermined`` soft: SES sends a bounce only once it has given up, so
a transient one is a real soft bounce), ``DeliveryDelay`` (a delay warning, kind
``delayed``: SES is still trying; SES publishes it only through a configuration set's
event destination) or ``Complaint`` (unless its feedback type is ``not-spam``). Other
event types (Send, Delivery, Open, ...) are ignored. Certificates are fetched by an
injectable function and cached by URL.

**Generic JSON** (``POST /webhooks/events``, ``Authorization: Bearer SECRET``)::

    {"events": [{"type": "bounce", "email": "ann@example.com", "bounce_type": "hard",
                 "message_id": "<...>", "detail": "550 5.1.1 user unknown"}]}

``type`` is ``bounce`` (with ``bounce_type`` ``hard`` or ``soft``), ``delayed`` (a delay
warning: the provider is still trying; it is recorded and changes nothing),
``complaint`` or ``unsubscribe``; ``message_id`` (the Message-ID of our message) and
``return_path`` (its envelope sender, our VERP address) name the delivery when given;
``detail`` is free text. The whole batch is checked before anything is stored.

**Proof.** An event acts only when it proves that we mailed the address (see
:mod:`subscribers.bounces`): the ``return_path`` (SES: ``mail.source``, the envelope
sender) is our signed VERP address of a delivery to that address, or the Message-ID of our
message (SES: the ``Message-ID`` among ``mail.headers`` or ``mail.commonHeaders.messageId``,
never SES's own ``mail.messageId``) is a delivery's or confirmation email's to that
address, or (SES, with original headers included) the message's List-Unsubscribe header
carries our signed link for that address. An event with only an address is stored as
unproven for review and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy.orm import Session

from newsletter.access.accounts import Forbidden, Unauthenticated
from newsletter.errors import InvalidInput
from newsletter.mail.return_path import delivery_of
from newsletter.store.states import BounceKind
from subscribers.addresses import normalise_email
from subscribers.bounces import BounceOutcome, find_proof, record_bounce, signed_links
from subscribers.tokens import TokenSigner

CertificateFetcher = Callable[[str], bytes]  # URL -> PEM bytes; raises on failure
UrlOpener = Callable[[str], None]  # GETs a URL (the SubscribeURL); raises on failure

MAX_BODY = 1024 * 1024  # SNS messages are at most 256 KB
MAX_EVENTS = 1000
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_EVENT_FIELDS = {"type", "email", "bounce_type", "message_id", "return_path", "detail"}


class SnsRejected(Forbidden):
    """An SNS message that is not from an allowed topic or not signed by SNS (HTTP 403)."""


class SnsTooOld(SnsRejected):
    """A signed SNS notification older than NEWSLETTER_SES_MAX_AGE: refused as a replay (HTTP 403)."""


@dataclass(frozen=True)
class ProviderEvent:
    """One event a provider reported, before it is matched to a delivery."""

    kind: BounceKind
    email: str  # normalised
    message_id: str | None = None
    return_path: str | None = None  # the envelope sender of our message: a VERP address names its delivery
    detail: str = ""
    # The original's List-Unsubscribe header(s), where SES includes the original headers: our signed link.
    list_unsubscribe: str = ""


@dataclass(frozen=True)
class SnsMessage:
    """A verified SNS message."""

    type: str  # "Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"
    topic_arn: str
    message: str
    subscribe_url: str | None
    timestamp: datetime | None = None  # the signed Timestamp: when SNS published it


class CertificateCache:
    """SNS signing certificates' public keys by URL; ``fetch`` gets a PEM when a URL is new."""

    def __init__(self, fetch: CertificateFetcher, *, size: int = 32) -> None:
        self.fetch = fetch
        self.size = size
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        """Raises SnsRejected when the certificate cannot be fetched, read or is not current."""
        with self._lock:
            key = self._keys.get(url)
        if key is not None:
            return key
        try:
            certificate = x509.load_pem_x509_certificate(self.fetch(url))
        except Exception as exc:
            raise SnsRejected(f"could not get the SNS signing certificate {url}: {exc}") from None
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsRejected(f"the SNS signing certificate {url} is not valid now")
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SnsRejected(f"the SNS signing certificate {url} has no RSA key")
        with self._lock:
            if len(self._keys) >= self.size:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = public_key
        return public_key


def fetch_certificate(url: str) -> bytes:
    """The real fetcher: an HTTPS GET with a timeout, no redirects. Raises httpx errors."""
    import httpx

    response = httpx.get(url, timeout=10.0, follow_redirects=False)
    response.raise_for_status()
    return response.content


def open_url(url: str) -> None:
    """GET a URL (to confirm an SNS subscription). Raises httpx errors."""
    import httpx

    httpx.get(url, timeout=10.0, follow_redirects=False).raise_for_status()


# --- Amazon SES through SNS ------------------------------------------------------------


def verify_sns(
    body: bytes,
    *,
    topics: Sequence[str],
    certificates: CertificateCache,
    max_age: float | None = None,
    now: datetime | None = None,
) -> SnsMessage:
    """Parse and verify an SNS POST body. Raises InvalidInput (not an SNS message), SnsRejected.

    With ``max_age`` (seconds), a Notification whose signed Timestamp is older raises
    SnsTooOld (a replay of a message captured once).
    """
    document = _json_object(body)
    kind = _string(document, "Type")
    if kind not in _SIGNED_FIELDS:
        raise InvalidInput(f"unknown SNS message type {kind!r}", where="Type")
    topic = _string(document, "TopicArn")
    if topic not in topics:
        raise SnsRejected(f"topic {topic!r} is not in NEWSLETTER_SES_TOPIC_ARNS")
    version = document.get("SignatureVersion")
    if version not in _HASHES:
        raise SnsRejected(f"unsupported SignatureVersion {version!r}")
    cert_url = _string(document, "SigningCertURL")
    if not _is_sns_url(cert_url) or not urlsplit(cert_url).path.endswith(".pem"):
        raise SnsRejected(f"SigningCertURL {cert_url!r} is not an https://sns.<region>.amazonaws.com/...pem URL")
    try:
        signature = base64.b64decode(_string(document, "Signature"), validate=True)
    except (binascii.Error, ValueError):
        raise SnsRejected("Signature is not base64") from None
    canonical = "".join(
        f"{field}\n{document[field]}\n"
        for field in _SIGNED_FIELDS[kind]
        if field in document and document[field] is not None
    )
    key = certificates.public_key(cert_url)
    try:
        key.verify(signature, canonical.encode("utf-8"), padding.PKCS1v15(), _HASHES[version]())
    except InvalidSignature:
        raise SnsRejected("the SNS signature does not verify") from None
    subscribe_url = document.get("SubscribeURL") if kind != "Notification" else None
    timestamp = _timestamp(document.get("Timestamp"))
    if kind == "Notification" and max_age is not None:
        if timestamp is None:
            raise InvalidInput("missing or not an ISO 8601 time, e.g. 2026-11-27T10:15:06.000Z", where="Timestamp")
        age = ((now or datetime.now(UTC)) - timestamp).total_seconds()
        if age > max_age:
            raise SnsTooOld(
                f"the SNS notification {document.get('MessageId')!r} of topic {topic} was published at "
                f"{document['Timestamp']}, {_duration(age)} ago, more than NEWSLETTER_SES_MAX_AGE ({_duration(max_age)}): "
                "refused as a replay"
            )
    return SnsMessage(
        kind, topic, _string(document, "Message"), subscribe_url if isinstance(subscribe_url, str) else None, timestamp
    )


def confirm_subscription(message: SnsMessage, opener: UrlOpener) -> None:
    """Confirm a verified SubscriptionConfirmation by fetching its SubscribeURL. Raises SnsRejected, the opener's errors."""
    url = message.subscribe_url or ""
    if not _is_sns_url(url):
        raise SnsRejected(f"SubscribeURL {url!r} is not an https://sns.<region>.amazonaws.com/ URL")
    opener(url)


def ses_events(message: SnsMessage) -> list[ProviderEvent]:
    """The bounce, delay and complaint events of a verified SNS Notification from SES (others: none). Raises InvalidInput."""
    try:
        ses = json.loads(message.message)
    except ValueError:
        raise InvalidInput("the SNS Message is not JSON", where="Message") from None
    if not isinstance(ses, dict):
        raise InvalidInput("the SNS Message is not an SES notification", where="Message")
    kind = ses.get("notificationType") or ses.get("eventType")
    mail = ses.get("mail")
    if not isinstance(mail, dict):
        mail = {}
    message_id = _ses_message_id(mail)
    source = mail.get("source") if isinstance(mail.get("source"), str) else None
    links = _ses_list_unsubscribe(mail)
    events: list[ProviderEvent] = []
    if kind == "Bounce":
        bounce = ses.get("bounce") or {}
        bounce_type = str(bounce.get("bounceType", ""))
        severity = BounceKind.HARD if bounce_type == "Permanent" else BounceKind.SOFT
        for recipient in bounce.get("bouncedRecipients") or []:
            address = _address(recipient.get("emailAddress"), "bounce.bouncedRecipients.emailAddress")
            parts = [f"SES {bounce_type or 'bounce'}/{bounce.get('bounceSubType', '')}"]
            parts += [str(recipient[k]) for k in ("status", "diagnosticCode") if recipient.get(k)]
            detail = " ".join(parts) + f" (feedback {bounce.get('feedbackId', '?')})"
            events.append(ProviderEvent(severity, address, message_id, source, detail, links))
    elif kind == "DeliveryDelay":
        delay = ses.get("deliveryDelay")
        if not isinstance(delay, dict):
            raise InvalidInput("a DeliveryDelay notification needs a deliveryDelay object", where="deliveryDelay")
        delay_type = str(delay.get("delayType") or "unspecified")
        until = f", retried until {delay['expirationTime']}" if delay.get("expirationTime") else ""
        recipients = delay.get("delayedRecipients") or []
        if not isinstance(recipients, list):
            raise InvalidInput("expected a list", where="deliveryDelay.delayedRecipients")
        for index, recipient in enumerate(recipients):
            where = f"deliveryDelay.delayedRecipients[{index}]"
            if not isinstance(recipient, dict):
                raise InvalidInput("expected an object", where=where)
            address = _address(recipient.get("emailAddress"), f"{where}.emailAddress")
            parts = [f"SES delay/{delay_type}"] + [
                str(recipient[k]) for k in ("status", "diagnosticCode") if recipient.get(k)
            ]
            events.append(
                ProviderEvent(BounceKind.DELAYED, address, message_id, source, " ".join(parts) + until, links)
            )
    elif kind == "Complaint":
        complaint = ses.get("complaint") or {}
        feedback_type = str(complaint.get("complaintFeedbackType") or "unspecified")
        if feedback_type.lower() == "not-spam":
            return []
        for recipient in complaint.get("complainedRecipients") or []:
            address = _address(recipient.get("emailAddress"), "complaint.complainedRecipients.emailAddress")
            detail = f"SES complaint: {feedback_type} (feedback {complaint.get('feedbackId', '?')})"
            events.append(ProviderEvent(BounceKind.COMPLAINT, address, message_id, source, detail, links))
    return events


# --- the generic JSON form ------------------------------------------------------------


def check_bearer(authorization: str | None, secret: str) -> None:
    """Raises Unauthenticated unless the header is ``Bearer <secret>`` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), secret.encode()):
        raise Unauthenticated("missing or wrong bearer token")


def generic_events(body: bytes) -> list[ProviderEvent]:
    """Parse and check a whole generic batch. Raises InvalidInput naming the first bad field (``events[2].email``)."""
    document = _json_object(body)
    events = document.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidInput("expected a non-empty list of events", where="events")
    if len(events) > MAX_EVENTS:
        raise InvalidInput(f"at most {MAX_EVENTS} events per request", where="events")
    parsed = []
    for index, item in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput("expected an object", where=where)
        unknown = sorted(set(item) - _EVENT_FIELDS)
        if unknown:
            raise InvalidInput(
                f"unknown field (known: {', '.join(sorted(_EVENT_FIELDS))})", where=f"{where}.{unknown[0]}"
            )
        kind = item.get("type")
        if kind == "bounce":
            kind = item.get("bounce_type")
            if kind not in (BounceKind.HARD, BounceKind.SOFT):
                raise InvalidInput(
                    'a bounce needs bounce_type "hard" or "soft" (a delay warning is type "delayed")',
                    where=f"{where}.bounce_type",
                )
        elif kind not in (BounceKind.DELAYED, BounceKind.COMPLAINT, BounceKind.UNSUBSCRIBE):
            raise InvalidInput('expected "bounce", "delayed", "complaint" or "unsubscribe"', where=f"{where}.type")
        email = _address(item.get("email"), f"{where}.email")
        optional = {}
        for field in ("message_id", "return_path", "detail"):
            value = item.get(field)
            if value is not None and not isinstance(value, str):
                raise InvalidInput("expected a string", where=f"{where}.{field}")
            optional[field] = value
        parsed.append(
            ProviderEvent(
                BounceKind(kind), email, optional["message_id"], optional["return_path"], optional["detail"] or ""
            )
        )
    return parsed


# --- acting on events ------------------------------------------------------------------


def apply_events(
    session: Session,
    events: Sequence[ProviderEvent],
    *,
    source: str,
    return_path: str | None,
    keys: Sequence[str],
    soft_limit: int,
    soft_days: float,
) -> list[BounceOutcome]:
    """Match each event to its proof (VERP return path, then Message-ID, then a signed link, all only for the same address) and record it.

    An event without proof is stored unproven and changes nothing. Raises InvalidInput,
    NotFound (from record_bounce).
    """
    signer = TokenSigner(keys[0], keys[1:]) if keys else None
    outcomes = []
    for event in events:
        list_id = proof = None
        delivery_id = _verp_delivery(session, event, return_path, keys)
        if delivery_id is None:
            signed = signed_links(event.list_unsubscribe, signer) if event.list_unsubscribe and signer else ()
            found = find_proof(session, email=event.email, message_id=event.message_id, signed=signed)
            if found is not None:
                delivery_id, list_id, proof = found.delivery_id, found.list_id, found.how
        outcomes.append(
            record_bounce(
                session,
                email=event.email,
                delivery_id=delivery_id,
                kind=event.kind,
                source=source,
                detail=event.detail,
                soft_limit=soft_limit,
                soft_days=soft_days,
                list_id=list_id,
                proof=proof,
            )
        )
    return outcomes


def outcome_json(outcome: BounceOutcome) -> dict[str, Any]:
    return {
        "email": outcome.email,
        "kind": outcome.kind,
        "delivery_id": outcome.delivery_id,
        "repeated": outcome.repeated,
        "proven": outcome.proven,
        "suppressed": outcome.suppressed,
        "unsubscribed": list(outcome.unsubscribed),
    }


# --- helpers ---------------------------------------------------------------------------


def _verp_delivery(session: Session, event: ProviderEvent, return_path: str | None, keys: Sequence[str]) -> int | None:
    if not event.return_path or return_path is None:
        return None
    delivery_id = delivery_of(event.return_path, return_path, keys)
    if delivery_id is None:
        return None
    from newsletter.store.models import Delivery

    delivery = session.get(Delivery, delivery_id)
    # One VERP address per delivery, so the event's address must be the delivery's own.
    return delivery_id if delivery is not None and delivery.email == event.email else None


def _is_sns_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and port in (None, 443)
        and parts.username is None
        and _SNS_HOST.fullmatch(parts.hostname or "") is not None
    )


def _ses_message_id(mail: dict[str, Any]) -> str | None:
    """The Message-ID header of our message: from the original headers SES keeps, or the common headers."""
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value", "")).strip() or None
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        return common["messageId"].strip() or None
    return None


def _ses_list_unsubscribe(mail: dict[str, Any]) -> str:
    """The List-Unsubscribe header(s) of our message, where SES includes the original headers; else ""."""
    values = [
        str(header.get("value", ""))
        for header in mail.get("headers") or []
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "list-unsubscribe"
    ]
    return "\n".join(values)


def _timestamp(value: object) -> datetime | None:
    """An SNS Timestamp (``2026-11-27T10:15:06.000Z``) as an aware datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise InvalidInput(f"the request body is larger than {MAX_BODY // 1024} KB", where="body")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not JSON", where="body") from None
    if not isinstance(document, dict):
        raise InvalidInput("expected a JSON object", where="body")
    return document


def _string(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str):
        raise InvalidInput("missing or not a string", where=field)
    return value


def _address(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput("expected an email address", where=where)
    try:
        return normalise_email(value)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, where=where) from None
