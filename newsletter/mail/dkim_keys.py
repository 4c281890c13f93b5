"""DKIM keys: generate an RSA key pair, read the private key, and write the DNS record of its public half.

The public key is published as a TXT record at ``SELECTOR._domainkey.DOMAIN`` with the value
``v=DKIM1; k=rsa; p=BASE64`` (RFC 6376 section 3.6.1), where BASE64 is the DER
SubjectPublicKeyInfo, as OpenDKIM and every major provider publish it. A TXT record's
strings hold at most 255 octets each (RFC 1035), so the zone-file form splits the value.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter.errors import InvalidInput

MIN_BITS = 1024  # RFC 8301: verifiers reject smaller keys
RECOMMENDED_BITS = 2048
MAX_BITS = 4096
DOMAIN_RE = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
SELECTOR_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62})")
_TXT_STRING = 255


class KeyProblem(Exception):
    """The private key file cannot be used; the message says why (without the key's content)."""


def check_domain(domain: str, where: str = "--domain") -> str:
    """The lower-cased domain; raises InvalidInput naming ``where`` when it is not a domain name."""
    if not DOMAIN_RE.fullmatch(domain):
        raise InvalidInput(f"not a domain name: {domain!r}", where=where)
    return domain.lower()


def check_selector(selector: str, where: str = "--selector") -> str:
    if not SELECTOR_RE.fullmatch(selector):
        raise InvalidInput(
            f"not a DKIM selector (letters, digits, '.', '_', '-'; at most 63): {selector!r}", where=where
        )
    return selector


def generate_private_key(bits: int = RECOMMENDED_BITS) -> rsa.RSAPrivateKey:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidInput(f"key size must be between {MIN_BITS} and {MAX_BITS} bits, got {bits}", where="--bits")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#1 PEM ("BEGIN RSA PRIVATE KEY"), unencrypted: what OpenDKIM, rspamd and dkimpy all read."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def write_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """Write the key readable by its owner only (0600). Raises InvalidInput if the file exists or cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInput(
            "already exists; not overwriting a key (choose another --out, or move the old key away)", where=str(path)
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot create the key file: {exc.strerror}", where=str(path)) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask
        handle.write(private_key_pem(key))


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Read an unencrypted PEM RSA private key (PKCS#1 or PKCS#8). Raises KeyProblem saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyProblem(f"{path} is encrypted with a passphrase; DKIM needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyProblem(f"{path} is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyProblem(f"{path} holds a {type(key).__name__.removeprefix('_')} key; DKIM signing here needs RSA")
    if key.key_size < MIN_BITS:
        raise KeyProblem(f"{path} holds a {key.key_size}-bit RSA key; receivers ignore keys under {MIN_BITS} bits")
    return key


def public_key_base64(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def record_value(key: rsa.RSAPrivateKey) -> str:
    """The TXT record's value, in one piece (what a DNS provider's web form wants)."""
    return f"v=DKIM1; k=rsa; p={public_key_base64(key)}"


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def zone_line(selector: str, domain: str, key: rsa.RSAPrivateKey) -> str:
    """The record in zone-file syntax, its value split into strings of at most 255 characters."""
    value = record_value(key)
    strings = " ".join(f'"{value[i : i + _TXT_STRING]}"' for i in range(0, len(value), _TXT_STRING))
    return f"{record_name(selector, domain)}. IN TXT {strings}"


def parse_record(text: str) -> dict[str, str]:
    """The tags of a published DKIM record, given as its value or in zone-file form (quoted strings are joined).

    Raises InvalidInput when it is not a DKIM key record.
    """
    if '"' in text:
        text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', text))
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if not part.strip():
            continue
        if not sep:
            raise InvalidInput(f"not a tag=value pair: {part.strip()!r}", where="DKIM record")
        tags[name.strip()] = re.sub(r"\s+", "", value)
    if not tags.get("p"):
        raise InvalidInput("no public key (p=) in it", where="DKIM record")
    return tags


def record_matches(text: str, key: rsa.RSAPrivateKey) -> bool:
    """Whether a published record (value or zone-file form) carries the public half of ``key``."""
    tags = parse_record(text)
    return tags.get("k", "rsa") == "rsa" and tags["p"] == public_key_base64(key)
