"""DKIM signatures (RFC 6376) on outgoing messages: rsa-sha256, relaxed/simple.

The signature is dkimpy's, made the way ``dkim.sign()`` makes it: dkimpy parses the
header, canonicalises it (relaxed), selects and hashes the signed fields, and lays out and
folds the DKIM-Signature field. Only the RSA step differs: dkimpy does it in pure Python
(7 to 13 ms per message with a 2048-bit key on a small server) and offers no hook to
replace it, so :class:`DkimSigner` runs dkimpy's steps itself and hands the SHA-256 digest
to OpenSSL through the ``cryptography`` package (RSASSA-PKCS1-v1_5, about 0.9 ms). PKCS#1 v1.5
signatures are deterministic, so for the same message, key and time the field is byte for
byte what ``dkim.sign()`` returns (tests/test_dkim.py checks it, and checks that stock
``dkim.verify()`` accepts every message of a real send).

Messages are final SMTP DATA with CRLF line endings (what
:meth:`newsletter.mail.messages.CompiledMessage.build` makes). The body is canonicalised with
"simple", which for such a message is the body itself with one final CRLF: its hash is one
pass of SHA-256 over bytes already in memory, with no copy. Most header fields are the same
in every copy of a send (From, Subject, List-Id, ...), so each field's relaxed form is
kept once computed: per copy, only To, Date, Message-ID and List-Unsubscribe are new. The
header is split into fields with bytes operations where it is plain (every field line
``Name: value``, CRLF only), else by dkimpy's parser; both give dkimpy's fields.

The signed fields (``h=``), the same for every message: From, To, Subject, Date,
Message-ID, MIME-Version, Content-Type, List-Id, List-Unsubscribe, List-Unsubscribe-Post,
Feedback-ID and Reply-To, then From and Subject once more. A field named in ``h=`` more
often than the message has it is signed as absent (RFC 6376 section 5.4.2): a Reply-To
added to a message without one, or a second From or Subject, breaks the signature instead
of reaching the reader.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

from newsletter.config import DkimSettings
from newsletter.errors import ConfigError
from newsletter.mail.dkim_keys import KeyProblem, load_private_key

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
    b"reply-to",
    b"from",
    b"subject",  # over-signed: a second one cannot be added
)
CANONICALIZATION = CanonicalizationPolicy.from_c_value(b"relaxed/simple")
_FIELD = b"DKIM-Signature"
_CRLF = b"\r\n"
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # what dkim.rfc822_parse takes for a field name
_CACHE_SIZE = 4096


class DkimSigner:
    """Signs messages for one domain and selector; build it once per process (it holds the parsed key)."""

    def __init__(self, domain: str, selector: str, private_key: rsa.RSAPrivateKey) -> None:
        self.domain = domain.lower()
        self.selector = selector
        self.key_bits = private_key.key_size
        self._d = self.domain.encode("ascii")
        self._s = selector.encode("ascii")
        self._key = private_key
        self._padding = padding.PKCS1v15()
        self._algorithm = utils.Prehashed(hashes.SHA256())
        self._relaxed: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}

    @classmethod
    def from_settings(cls, settings: DkimSettings) -> DkimSigner:
        """Raises ConfigError naming NEWSLETTER_DKIM_PRIVATE_KEY_FILE when the key cannot be used."""
        try:
            key = load_private_key(settings.private_key_file)
        except KeyProblem as exc:
            raise ConfigError(f"NEWSLETTER_DKIM_PRIVATE_KEY_FILE: {exc}") from None
        return cls(settings.domain, settings.selector, key)

    def sign(self, message: bytes, *, now: int | None = None) -> bytes:
        """The message with its DKIM-Signature field prepended."""
        return self.signature(message, now=now) + message

    def signature(self, message: bytes, *, now: int | None = None) -> bytes:
        """The DKIM-Signature field for ``message``, folded, ending in CRLF. ``now`` is t= (default: the time)."""
        end = message.find(b"\r\n\r\n")
        if end == -1:
            raise ValueError("not a message: no empty line ends its header")
        headers = self._relaxed_fields(message[: end + 2])

        # Body, "simple": the body with every trailing CRLF but one removed (an empty body is one CRLF).
        start, stop = end + 4, len(message)
        while stop - 2 >= start and message.endswith(_CRLF, stop - 2, stop):
            stop -= 2
        body_hash = hashlib.sha256(memoryview(message)[start:stop])
        body_hash.update(_CRLF)

        # From here on, exactly dkim.DKIM.sign() and DomainSigner.gen_header() for rsa-sha256, relaxed/simple.
        fields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", CANONICALIZATION.to_c_value()),
            (b"d", self._d),
            (b"i", b"@" + self._d),
            (b"q", b"dns/txt"),
            (b"s", self._s),
            (b"t", str(int(time.time()) if now is None else now).encode("ascii")),
            (b"h", b" : ".join(SIGNED_HEADERS)),
            (b"bh", base64.b64encode(body_hash.digest())),
            (b"b", b"0" * 60),  # placeholder, so the folding of the tags before b= stays put
        ]
        value: bytes = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_FIELD), linesep=_CRLF)
        value = dkim.RE_BTAG.sub(b"\\1", value)
        digest = hashlib.sha256()
        dkim.hash_headers(digest, CANONICALIZATION, headers, SIGNED_HEADERS, (_FIELD, b" " + value), None)
        signature = self._key.sign(digest.digest(), self._padding, self._algorithm)
        fields[-1] = (b"b", base64.b64encode(signature))
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + _CRLF, namelen=len(_FIELD), linesep=_CRLF)
        return _FIELD + b": " + value

    def _relaxed_fields(self, head: bytes) -> list[tuple[bytes, bytes]]:
        """The header's fields in order, relaxed-canonicalised by dkimpy (each distinct field once)."""
        raw = _plain_fields(head)
        if raw is None:
            raw = [(name, value) for name, value in dkim.rfc822_parse(head)[0]]
        relaxed, cache = [], self._relaxed
        for field in raw:
            canonical = cache.get(field)
            if canonical is None:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                canonical = cache[field] = CANONICALIZATION.canonicalize_headers([field])[0]
            relaxed.append(canonical)
        return relaxed


def _plain_fields(head: bytes) -> list[tuple[bytes, bytes]] | None:
    """``(name, value)`` pairs exactly as ``dkim.rfc822_parse`` makes them, or None for a header it should parse.

    ``head`` ends with CRLF. A value keeps its continuation lines and ends with CRLF.
    """
    fields: list[list[bytes]] = []
    for line in head[:-2].split(_CRLF):
        if b"\n" in line or b"\r" in line:
            return None
        if line[:1] in (b" ", b"\t"):
            if not fields:
                return None
            fields[-1][1] += line + _CRLF
            continue
        name, colon, value = line.partition(b":")
        if not colon or _FIELD_NAME.fullmatch(name) is None:
            return None
        fields.append([name, value + _CRLF])
    return [(name, value) for name, value in fields]
