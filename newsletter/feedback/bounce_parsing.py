"""Reading inbound mail: is it a bounce, a complaint, an unsubscribe request, or none of these?

:func:`classify` takes one message as received (its bytes and envelope recipients) and
returns the events it reports, with everything known about each: the address, the
delivery (from a VERP envelope recipient, the most reliable clue), the original
message's Message-ID (to find the delivery when the VERP address is missing), the signed
unsubscribe links of ours the report quotes, and a one-line detail. It touches no
database; :mod:`newsletter.feedback.inbound` acts on the result, and only on what is proven (see
:mod:`subscribers.bounces`): a report to the bare return path that names an address but
quotes nothing of our mail to it is kept for review and changes nothing.

What is understood, in this order:

* **RFC 3464 delivery status notifications** (``multipart/report;
  report-type=delivery-status``): per recipient, ``Action: failed`` with a 5.x.x
  ``Status`` is a hard bounce (except 5.2.2, mailbox full, which is soft, as every large
  sender treats it); ``failed`` with 4.x.x is soft (the reporting server gave up after a
  temporary error); ``delayed`` is a delay warning (kind ``delayed``: the server is
  still trying, and the message may yet arrive); ``delivered``, ``relayed`` and
  ``expanded`` reports are not bounces.
* **RFC 5965 feedback reports (ARF)** (``report-type=feedback-report``): a complaint for
  the ``Original-Rcpt-To`` address, or the original message's ``To``; the report's
  ``Original-Mail-From`` may be our VERP address. ``Feedback-Type: not-spam`` is no
  complaint.
* **Non-standard bounces** (Exim, qmail, old Postfix, Exchange, ...) through flufl.bounce:
  its permanent failures are hard bounces, its temporary ones delay warnings (see below).
* **Auto-replies** (vacation notices, RFC 3834 ``Auto-Submitted``): ignored.
* Mail to ``unsubscribe+TOKEN@...`` is an unsubscribe request for the token's list.

**What flufl.bounce's "temporary" means.** ``all_failures`` runs its detectors in turn
and stops at the first that names an address. Only two of them ever report a temporary
failure: its DSN detector, for ``Action: delayed`` blocks (DSNs are read here first, so
it only sees the odd DSN this module could not read), and SimpleWarning, whose patterns
are all warnings that the message has *not yet* been delivered and will be retried
(Gmail's "Delivery to the following recipient has been delayed ... Message will be
retried", Exchange's "advisory-only ... has been postponed", "... not yet been delivered
... No action is required on your part", "Delivery attempts will continue to be made").
Every other detector (Exim, qmail, Postfix, the SimpleMatch patterns, ...) reports
permanent failures only; a "could not be delivered" report that ends a server's retries
is one of those. So "temporary" means "delay warning", and is recorded as ``delayed``,
never as a soft bounce.

The reverse does not hold: a plain-text delay warning can reach a permanent-only
detector first. Exim's warning ("Warning: message ... delayed 24 hours") quotes the
server's ``RCPT TO:<address>`` reply under "This message was created automatically by
mail delivery software", which SimpleMatch takes for a failure, and flufl.bounce's
Postfix detector calls every address in a pre-DSN Postfix "Delayed Mail (still being
retried)" notice permanent. A non-standard bounce whose own Subject is a delay warning's
(:data:`_WARNING_SUBJECT`, anchored at the start, so a quoted original subject does not
count) is therefore recorded as ``delayed`` whatever the detectors said.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from newsletter.errors import InvalidInput
from newsletter.mail.return_path import delivery_of
from newsletter.store.states import BounceKind
from subscribers.addresses import normalise_email
from subscribers.bounces import signed_links
from subscribers.tokens import TokenSigner

UNSUBSCRIBE_LOCAL = "unsubscribe"

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ORIGINAL_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|vacation|abwesenheit|"
    r"r[ée]ponse automatique|absence|on leave|away from)\b",
    re.IGNORECASE,
)
_COMPLAINT_TYPES = ("abuse", "fraud", "virus", "other")
# The Subject of a delay warning, as MTAs write it: Exim, Postfix before DSNs, Sendmail, Gmail, Exchange.
_WARNING_SUBJECT = re.compile(
    r"^\s*(warning: message \S+ delayed\b|delayed mail \(still being retried\)|"
    r"warning: could not send message for past\b|delivery status notification \(delay\)|"
    r"(mail )?delivery (has been )?delayed\b)",
    re.IGNORECASE,
)
# Worst first: with a VERP address the one delivery gets the worst news a DSN has about it.
_SEVERITY = {BounceKind.HARD: 0, BounceKind.SOFT: 1, BounceKind.DELAYED: 2}


@dataclass(frozen=True)
class Report:
    """One event an inbound message reports."""

    kind: BounceKind
    email: str | None  # the address reported (normalised); None when only the delivery is known
    delivery_id: int | None = None  # from a VERP address of ours
    message_id: str | None = None  # the Message-ID of the message that bounced or was reported
    detail: str = ""
    token: str | None = None  # an unsubscribe request's token
    # (subscriber id, list id) of each signed unsubscribe link of ours the report quotes (the original's
    # List-Unsubscribe header or footer): proof that we mailed that subscriber, see subscribers.bounces.find_proof.
    signed: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Classification:
    """What one inbound message is (``verdict``) and the events it reports."""

    verdict: str  # "dsn", "feedback report", "non-standard bounce", "unsubscribe", "auto-reply", "not a bounce", "unclassified"
    reports: tuple[Report, ...] = ()
    note: str = ""  # why nothing was found, for the log


@dataclass(frozen=True)
class Mailboxes:
    """The addresses the inbound server answers for and the keys that prove them."""

    return_path: str | None  # NEWSLETTER_RETURN_PATH, e.g. bounces@example.com
    keys: tuple[str, ...]  # the secret key and the old ones: VERP addresses are signed with them
    signer: TokenSigner

    def role(self, address: str) -> tuple[str, int | str | None] | None:
        """What a recipient address is to us, or None when it is not ours.

        ("verp", delivery id), ("return path", None) or ("unsubscribe", token). A VERP
        address whose signature does not check out is not ours, nor is an unsubscribe
        address with a forged or foreign token.
        """
        address = address.strip().strip("<>")
        local, _, domain = address.rpartition("@")
        if not local or not domain:
            return None
        if self.return_path is not None:
            if address.lower() == self.return_path:
                return ("return path", None)
            delivery_id = delivery_of(address, self.return_path, self.keys)
            if delivery_id is not None:
                return ("verp", delivery_id)
        base, plus, token = local.partition("+")
        if plus and base.lower() == UNSUBSCRIBE_LOCAL and token:
            try:
                self.signer.verify(token, "unsubscribe")
            except InvalidInput:
                return None
            return ("unsubscribe", token)
        return None


def parse_message(data: bytes) -> email.message.Message:
    """The message as the email package's classic model, which flufl.bounce walks."""
    return email.message_from_bytes(data, policy=email.policy.compat32)


def classify(data: bytes, rcpt_tos: Sequence[str], mailboxes: Mailboxes) -> Classification:
    """Classify one inbound message sent to ``rcpt_tos`` (the envelope recipients). Raises nothing.

    Recipients that are not ours are ignored (the server refuses them before the data).
    """
    message = parse_message(data)
    roles = [r for r in (mailboxes.role(a) for a in rcpt_tos) if r is not None]
    verp_ids = sorted({value for role, value in roles if role == "verp" and isinstance(value, int)})
    tokens = [str(value) for role, value in roles if role == "unsubscribe"]
    to_return_path = any(role in ("verp", "return path") for role, _ in roles)

    result = Classification("unclassified", note="no recipient of ours")
    if to_return_path:
        # One VERP address per delivery: two at once (never seen in practice) name no one.
        delivery_id = verp_ids[0] if len(verp_ids) == 1 else None
        result = _classify_bounce(message, data, delivery_id, mailboxes)
        if result.reports:
            signed = signed_links(data, mailboxes.signer)
            if signed:
                result = replace(result, reports=tuple(replace(r, signed=signed) for r in result.reports))
    if tokens:
        if result.reports or _is_report(message) or is_auto_reply(message):
            # A bounce or an auto-reply that happens to reach the unsubscribe address
            # unsubscribes no one: only a person's own message does.
            if not result.reports:
                result = Classification("auto-reply", note="automatic message to an unsubscribe address")
        else:
            unsubscribes = tuple(
                Report(BounceKind.UNSUBSCRIBE, None, token=token, detail="unsubscribe email (List-Unsubscribe mailto)")
                for token in tokens
            )
            result = Classification("unsubscribe", result.reports + unsubscribes)
    return result


def is_auto_reply(message: email.message.Message) -> bool:
    """An automatic answer (vacation notice, "out of office", a ticket system's receipt)."""
    auto = (message.get("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if any(message.get(h) is not None for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponse")):
        return True
    if (message.get("Precedence") or "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_REPLY_SUBJECT.search(_subject(message)))


# --- bounces -----------------------------------------------------------------------------


def _classify_bounce(
    message: email.message.Message, data: bytes, delivery_id: int | None, mailboxes: Mailboxes
) -> Classification:
    report_type = _report_type(message)
    parts = list(message.walk())
    if report_type == "feedback-report" or any(p.get_content_type() == "message/feedback-report" for p in parts):
        return _feedback_report(message, parts, delivery_id, mailboxes)
    if report_type == "delivery-status" or any(p.get_content_type() == "message/delivery-status" for p in parts):
        dsn = _delivery_status(message, parts, data, delivery_id)
        if dsn is not None:
            return dsn
    try:
        temporary, permanent = all_failures(message)
    except Exception as exc:
        return Classification("unclassified", note=f"the bounce detectors failed on it: {exc!r}")
    if temporary or permanent:
        return _non_standard(message, data, delivery_id, temporary, permanent)
    if is_auto_reply(message):
        return Classification("auto-reply", note=f"automatic reply ({_subject(message)[:80]!r}), not a bounce")
    return Classification("unclassified", note=f"no bounce or complaint found in {_subject(message)[:80]!r}")


def _delivery_status(
    message: email.message.Message, parts: list[email.message.Message], data: bytes, delivery_id: int | None
) -> Classification | None:
    recipients: list[tuple[BounceKind, str | None, str]] = []  # kind, address, detail
    successes = 0
    for part in parts:
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, str):  # some parsers leave it as text: read the header blocks ourselves
            blocks = [email.message_from_string(b) for b in re.split(r"\r?\n\r?\n", payload) if b.strip()]
        else:
            blocks = _messages(payload)
        for block in blocks[1:] if len(blocks) > 1 else blocks:  # the first block is about the message
            action = (block.get("Action") or "").strip().lower()
            status_match = _STATUS.search(block.get("Status") or "")
            status = status_match.group(0) if status_match else ""
            if action.startswith(("failed", "error")):
                permanent = status.startswith("5") or not status
                kind = BounceKind.SOFT if not permanent or status == "5.2.2" else BounceKind.HARD
            elif action.startswith("delayed"):
                kind = BounceKind.DELAYED  # a warning: the server is still trying
            elif action:
                successes += 1
                continue
            else:
                continue
            address = _dsn_address(block)
            diagnostic = " ".join((block.get("Diagnostic-Code") or "").split())
            detail = f"{action.split()[0]} {status or '(no status)'}" + (f": {diagnostic}" if diagnostic else "")
            recipients.append((kind, address, detail))
    if not recipients:
        if successes:
            return Classification("not a bounce", note="a delivery status notification that reports success")
        return None  # a report without per-recipient fields: let the heuristics try
    original_id = _original_message_id(parts, data)
    reference = _reference(message)
    if delivery_id is not None:
        # The VERP address names the delivery; the worst news about it is what counts (hard, soft, delayed).
        kind, address, detail = min(recipients, key=lambda r: _SEVERITY[r[0]])
        return Classification("dsn", (Report(kind, address, delivery_id, original_id, detail + reference),))
    reports = tuple(
        Report(kind, address, None, original_id, detail + reference) for kind, address, detail in recipients if address
    )
    if not reports:
        return Classification("unclassified", note="a delivery status notification naming no valid address")
    return Classification("dsn", reports)


def _dsn_address(block: email.message.Message) -> str | None:
    """The recipient a DSN block is about: the Original-Recipient (what we sent to) before the Final-Recipient."""
    for field in ("Original-Recipient", "Final-Recipient", "X-Actual-Recipient"):
        value = block.get(field)
        if not value:
            continue
        _, _, address = value.partition(";")
        address = (address or value).strip().strip("<>").strip()
        try:
            return normalise_email(address)
        except InvalidInput:
            continue
    return None


def _non_standard(
    message: email.message.Message,
    data: bytes,
    delivery_id: int | None,
    temporary: frozenset[bytes],
    permanent: frozenset[bytes],
) -> Classification:
    original_id = _original_message_id(list(message.walk()), data)
    full_subject = _subject(message)
    subject = full_subject[:120]
    reference = _reference(message)
    if permanent and _WARNING_SUBJECT.match(full_subject):
        # A warning that a permanent-only detector misread (see the module docstring).
        temporary, permanent = temporary | permanent, frozenset()
    found: dict[str, BounceKind] = {}
    # Hard wins when both name an address.
    for kind, addresses in ((BounceKind.DELAYED, temporary), (BounceKind.HARD, permanent)):
        for raw in addresses:
            try:
                found[normalise_email(raw.decode("ascii", "replace"))] = kind
            except InvalidInput:
                continue
    what = {BounceKind.HARD: "permanent failure", BounceKind.DELAYED: "delay warning"}
    if delivery_id is not None:
        kind = BounceKind.HARD if permanent else BounceKind.DELAYED
        only = next(iter(found)) if len(found) == 1 else None
        detail = f"{what[kind]} (non-standard bounce: {subject!r})"
        return Classification(
            "non-standard bounce", (Report(kind, only, delivery_id, original_id, detail + reference),)
        )
    reports = tuple(
        Report(kind, address, None, original_id, f"{what[kind]} (non-standard bounce: {subject!r})" + reference)
        for address, kind in sorted(found.items())
    )
    if not reports:
        return Classification("unclassified", note="a bounce naming no valid address")
    return Classification("non-standard bounce", reports)


# --- complaints --------------------------------------------------------------------------


def _feedback_report(
    message: email.message.Message, parts: list[email.message.Message], delivery_id: int | None, mailboxes: Mailboxes
) -> Classification:
    fields = email.message.Message()
    for part in parts:
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, str):
                fields = email.message_from_string(payload.strip() + "\n\n")
            elif blocks := _messages(payload):
                fields = blocks[0]
            break
    feedback_type = (fields.get("Feedback-Type") or "").strip().lower()
    if feedback_type not in _COMPLAINT_TYPES:
        return Classification(
            "not a bounce", note=f"a feedback report of type {feedback_type or '(none)'!r}, not a complaint"
        )
    original = _original_headers(parts)
    address: str | None = None
    for value in fields.get_all("Original-Rcpt-To") or []:
        address = _address_or_none(value)
        if address:
            break
    if address is None and original is not None:
        tos = [a for _, a in getaddresses(original.get_all("To") or [])]
        address = next((a for a in map(_address_or_none, tos) if a), None)
    if delivery_id is None and mailboxes.return_path is not None:
        # A feedback loop sends reports to a fixed address, but the report keeps the envelope sender.
        for sender in (fields.get("Original-Mail-From"), original.get("Return-Path") if original is not None else None):
            if sender:
                delivery_id = delivery_of(parseaddr(sender)[1] or sender, mailboxes.return_path, mailboxes.keys)
                if delivery_id is not None:
                    break
    message_id = (original.get("Message-ID", "").strip() or None) if original is not None else None
    if address is None and delivery_id is None:
        return Classification("unclassified", note="a complaint naming no address and no delivery of ours")
    agent = " ".join((fields.get("User-Agent") or "").split())[:80]
    detail = f"{feedback_type} report" + (f" from {agent}" if agent else "") + _reference(message)
    return Classification("feedback report", (Report(BounceKind.COMPLAINT, address, delivery_id, message_id, detail),))


# --- helpers ---------------------------------------------------------------------------


def _report_type(message: email.message.Message) -> str:
    """A multipart/report's report-type, lower-cased ("" for any other message)."""
    if message.get_content_type() != "multipart/report":
        return ""
    value = message.get_param("report-type")
    return email.utils.collapse_rfc2231_value(value).lower() if value else ""


def _messages(payload: object) -> list[email.message.Message]:
    """The messages of a multipart payload (a list); none for anything else."""
    return [m for m in payload if isinstance(m, email.message.Message)] if isinstance(payload, list) else []


def _is_report(message: email.message.Message) -> bool:
    return message.get_content_type() == "multipart/report" or message.get("X-Failed-Recipients") is not None


def _original_headers(parts: list[email.message.Message]) -> email.message.Message | None:
    """The headers of the message a report is about (a message/rfc822 or text/rfc822-headers part)."""
    for part in parts:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            if messages := _messages(part.get_payload()):
                return messages[0]
        if content_type in ("text/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
                raw if isinstance(raw, bytes) else b""
            )
    return None


def _original_message_id(parts: list[email.message.Message], data: bytes) -> str | None:
    original = _original_headers(parts)
    if original is not None and original.get("Message-ID"):
        return str(original.get("Message-ID")).strip()
    # A non-standard bounce quotes the original as text below its own headers.
    _, _, body = data.partition(b"\r\n\r\n") if b"\r\n\r\n" in data else data.partition(b"\n\n")
    match = _ORIGINAL_MESSAGE_ID.search(body)
    return match.group(1).decode("ascii", "replace") if match else None


def _reference(message: email.message.Message) -> str:
    """The report's own Message-ID, kept in the detail so a resent report is known as a repeat."""
    own = " ".join((message.get("Message-ID") or "").split())
    return f" (report {own[:200]})" if own else ""


def _address_or_none(value: str) -> str | None:
    address = parseaddr(value)[1] or value.strip().strip("<>")
    try:
        return normalise_email(address)
    except InvalidInput:
        return None


def _subject(message: email.message.Message) -> str:
    raw = message.get("Subject") or ""
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except Exception:
        return str(raw)
