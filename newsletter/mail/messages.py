"""Wire-ready email messages: the MIME structure is built once per send, then each
recipient's copy is a join of pre-encoded bytes with a few small encoded values.

The stdlib email package costs milliseconds per message to build and serialise, so it
is used only to encode the once-per-send parts (Subject, From); the per-recipient part is
a join. The output is final SMTP DATA: CRLF line endings, quoted-printable bodies whose
lines stay within 76 characters (RFC 2045), and no line starting with "." (so the
transport sends it without re-scanning for dot-stuffing).

    multipart/alternative
    ├── text/plain; charset=utf-8   (quoted-printable)  first: the fallback
    └── text/html;  charset=utf-8   (quoted-printable)  last: the preferred part
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import re
import time
import unicodedata
from dataclasses import dataclass, replace
from email.header import Header
from email.utils import formataddr, formatdate
from html import escape as html_escape

from newsletter.content.rendering import PERSONAL_FIELDS, placeholder_parts
from newsletter.errors import InvalidInput

CRLF = b"\r\n"


@dataclass(frozen=True)
class Recipient:
    """One recipient's personal values."""

    delivery_id: int
    email: str
    name: str
    unsubscribe_url: str
    preferences_url: str
    unsubscribe_mailto: str
    view_online_url: str
    tracking: str = ""  # a tracked send's token for its links and image, else empty


@dataclass(frozen=True)
class MessageHeaders:
    """What every copy of a send shares in its headers."""

    subject: str
    from_email: str
    from_name: str
    reply_to: str | None
    list_name: str
    list_slug: str
    message_id_tag: str  # unique per send, e.g. "42.k3j4h5": Message-IDs are <delivery.TAG@domain>
    # Gmail's Feedback-ID without its last field (the sender domain is added), e.g. "42:weekly:newsletter";
    # the same for every copy of a send, so Gmail's Postmaster Tools can report spam rates per send and list.
    feedback_id: str | None = None
    private: bool = False  # a private list: the view-in-browser link carries the archive key


_FEEDBACK_ID = re.compile(r"[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)*")


def check_header_value(field: str, value: str) -> str:
    """Raises InvalidInput if ``value`` holds CR, LF or another control character (header injection).

    Refused: C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
    """
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise InvalidInput(f"{field} contains a line break or control character ({char!r})", where=field)
    return value


def ascii_address(address: str) -> str:
    """The address with its domain in IDNA (ASCII) form, for the SMTP envelope."""
    local, _, domain = address.rpartition("@")
    try:
        domain.encode("ascii")
    except UnicodeEncodeError:
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


def sender_domain(address: str) -> str:
    return ascii_address(address).rpartition("@")[2]


class CompiledMessage:
    """A send's message, pre-encoded; :meth:`build` makes one recipient's copy in microseconds."""

    def __init__(self, headers: MessageHeaders, html: str, text: str, *, message_id_key: bytes | None = None) -> None:
        """``message_id_key`` (``TokenSigner.derived_key("message-id")``) makes every Message-ID carry a MAC of its
        delivery id, so nobody can work out another recipient's Message-ID from their own: a
        bounce that quotes one proves we mailed that address."""
        for field, value in (
            ("subject", headers.subject),
            ("from name", headers.from_name),
            ("from address", headers.from_email),
            ("reply-to", headers.reply_to or ""),
            ("list name", headers.list_name),
            ("list slug", headers.list_slug),
            ("Feedback-ID", headers.feedback_id or ""),
        ):
            check_header_value(field, value)
        if headers.feedback_id is not None and not _FEEDBACK_ID.fullmatch(headers.feedback_id):
            raise InvalidInput(
                f"not a Feedback-ID (colon-separated letters, digits, '.', '_', '-'): {headers.feedback_id!r}",
                where="Feedback-ID",
            )
        self.headers = headers
        # Keyed once; each Message-ID copies it (cheaper than a new HMAC per copy).
        self._id_mac = hmac.new(message_id_key, digestmod=hashlib.sha256) if message_id_key is not None else None
        self.domain = sender_domain(headers.from_email)
        self.envelope_from = ascii_address(headers.from_email)
        boundary = "nl-" + hashlib.sha256(f"{headers.message_id_tag}{html}".encode()).hexdigest()[:24]
        self._boundary = boundary
        self._shared_headers = self._shared(headers)
        text_head = (
            f'--{boundary}\r\nContent-Type: text/plain; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        html_head = (
            f'\r\n--{boundary}\r\nContent-Type: text/html; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        self._text = _compile_part(text, escape=False)
        self._html = _compile_part(html, escape=True)
        self._text_head, self._html_head = text_head, html_head
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self._date_second = 0
        self._date = b""

    def _shared(self, headers: MessageHeaders) -> bytes:
        """The headers every copy has, encoded."""
        shared = [
            _header("From", formataddr((headers.from_name, self.envelope_from), charset="utf-8")),
            _header("Subject", _encode_text_header(headers.subject, "Subject")),
            b"MIME-Version: 1.0",
            _header("Content-Type", f'multipart/alternative; boundary="{self._boundary}"'),
            _header("List-Id", f"{_phrase(headers.list_name)} <{headers.list_slug}.{self.domain}>"),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        ]
        if headers.reply_to:
            shared.append(_header("Reply-To", ascii_address(headers.reply_to)))
        if headers.feedback_id:
            shared.append(_header("Feedback-ID", f"{headers.feedback_id}:{self.domain}"))
        return CRLF.join(shared) + CRLF

    def with_subject(self, subject: str) -> CompiledMessage:
        """The same message under another Subject (a subject test's other variant): only the shared headers are
        encoded again; the bodies, the Message-IDs and the boundary stay the same. Raises InvalidInput."""
        check_header_value("subject", subject)
        twin = copy.copy(self)
        twin.headers = replace(self.headers, subject=subject)
        twin._shared_headers = twin._shared(twin.headers)
        twin._date_second, twin._date = 0, b""
        return twin

    def message_id(self, delivery_id: int) -> str:
        tag = self.headers.message_id_tag
        if self._id_mac is None:
            return f"<{delivery_id}.{tag}@{self.domain}>"
        keyed = self._id_mac.copy()
        keyed.update(f"{delivery_id}.{tag}".encode())
        mac = keyed.hexdigest()[:20]
        return f"<{delivery_id}.{tag}.{mac}@{self.domain}>"

    def build(self, recipient: Recipient, *, subject_prefix: str = "") -> tuple[str, bytes]:
        """Return (Message-ID, wire bytes) of ``recipient``'s copy."""
        now = int(time.time())
        if now != self._date_second:
            # "+0000", not formatdate's "-0000", which RFC 5322 reserves for an unknown zone.
            self._date_second, self._date = now, _header("Date", formatdate(now)[:-5] + "+0000")
        message_id = self.message_id(recipient.delivery_id)
        values = (
            recipient.name,
            recipient.email,
            recipient.unsubscribe_url,
            recipient.preferences_url,
            recipient.view_online_url,
            recipient.tracking,
        )
        head = [
            self._shared_headers,
            _to_header(recipient.name, recipient.email),
            CRLF,
            self._date,
            CRLF,
            b"Message-ID: ",
            message_id.encode(),
            CRLF,
            b"List-Unsubscribe: <",
            recipient.unsubscribe_url.encode(),
            b">,\r\n <",
            recipient.unsubscribe_mailto.encode(),
            b">\r\n",
            CRLF,
            self._text_head,
        ]
        head += _fill(self._text, values, escape=False)
        head.append(self._html_head)
        head += _fill(self._html, values, escape=True)
        head.append(self._tail)
        return message_id, b"".join(head)


# --- encoding helpers -----------------------------------------------------------

_Part = tuple[bytes, tuple[tuple[int, bytes | None, bytes], ...]]


def _compile_part(rendered: str, *, escape: bool) -> _Part:
    """Split a rendered part at its placeholders and QP-encode every literal once.

    Each literal that is followed by a value ends in a soft line break, and each literal
    that follows a value starts after one, so a value always sits on lines of its own
    and no line grows past 76 characters whatever the value's length.
    """
    head, slots = placeholder_parts(rendered)
    compiled = []
    for index, fallback, literal in slots:
        encoded_fallback = None
        if fallback is not None:
            # Fallbacks come from templates already escaped for their part.
            encoded_fallback = _qp_value(fallback)
        compiled.append((index, encoded_fallback, b"=\r\n" + _qp_literal(literal)))
    first = _qp_literal(head)
    if slots:
        first += b"=\r\n"
        compiled = [
            (i, f, lit + (b"=\r\n" if n < len(compiled) - 1 else b"")) for n, (i, f, lit) in enumerate(compiled)
        ]
    return first, tuple(compiled)


def _fill(part: _Part, values: tuple[str, ...], *, escape: bool) -> list[bytes]:
    first, slots = part
    pieces = [first]
    for index, fallback, literal in slots:
        value = values[index]
        if not value and fallback is not None:
            pieces.append(fallback)
        else:
            pieces.append(_qp_value(html_escape(value, quote=True) if escape else value))
        pieces.append(literal)
    return pieces


def _qp_literal(text: str) -> bytes:
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8")).replace(b"\n", CRLF)
    encoded = encoded.replace(b"\r\n.", b"\r\n=2E")
    return b"=2E" + encoded[1:] if encoded.startswith(b".") else encoded


def _qp_value(value: str) -> bytes:
    # Values are single-line (names are checked for control characters on input).
    encoded = binascii.b2a_qp(value.encode("utf-8")).replace(b"=\n", b"=\r\n").replace(b"\r\n.", b"\r\n=2E")
    return b"=2E" + encoded[1:] if encoded.startswith(b".") else encoded


_SPECIALS = frozenset('()<>[]:;@\\,."')


def _to_header(name: str, address: str) -> bytes:
    """``To: name <address>``: encoded words (at most 75 characters each, folded) for a non-ASCII name.

    Also for a name with a control character, which input never lets in (names are checked where
    they are typed or imported); should one be stored anyway, it stays inside an encoded word
    instead of breaking the header.
    """
    address = ascii_address(address)
    if not name:
        return f"To: {address}".encode()  # UTF-8 only for a non-ASCII local part (SMTPUTF8)
    if name.isascii() and name.isprintable():
        phrase = (
            name if not _SPECIALS.intersection(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        )
    else:
        phrase = _encoded_words(name)
    return f"To: {phrase} <{address}>".encode()


_WORD_BYTES = 45  # 60 base64 characters: "=?utf-8?b?...?=" stays within RFC 2047's 75


def _encoded_words(text: str) -> str:
    """RFC 2047 "B" encoded words, split between characters and folded onto lines of their own.

    Per recipient, so hand-made: email.header.Header costs ~20 µs for the same result.
    """
    raw = text.encode("utf-8")
    if len(raw) <= _WORD_BYTES:
        return f"=?utf-8?b?{base64.b64encode(raw).decode('ascii')}?="
    words, current = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(current) + len(encoded) > _WORD_BYTES:
            words.append(current)
            current = b""
        current += encoded
    words.append(current)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _header(name: str, value: str) -> bytes:
    return f"{name}: {value}".encode("ascii", errors="strict")


def _encode_text_header(value: str, name: str) -> str:
    """RFC 2047 encoded words for non-ASCII text, folded at 78 characters."""
    try:
        value.encode("ascii")
        return Header(value, header_name=name).encode(linesep="\r\n")
    except UnicodeEncodeError:
        return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def _phrase(value: str) -> str:
    """A display name for List-Id: quoted, or RFC 2047 encoded when not ASCII."""
    try:
        value.encode("ascii")
    except UnicodeEncodeError:
        return Header(value, "utf-8").encode()
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


assert PERSONAL_FIELDS == ("name", "email", "unsubscribe_url", "preferences_url", "view_online_url", "tracking")
