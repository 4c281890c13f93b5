"""The configuration against the bulk-sender rules: what is in place and what is missing.

Gmail's and Yahoo's rules for bulk senders (2024) and the RFCs behind them ask for: DKIM
signatures with a key of 1024 bits or more (2048 recommended), DMARC alignment of the
From domain with the DKIM domain (or with the SPF-checked envelope domain), SPF and a
DMARC record published, one-click unsubscribe (RFC 8058: List-Unsubscribe with an https
URL, List-Unsubscribe-Post) answered by the web app, and, for CAN-SPAM, a postal address
in every message. On top of those this service needs its own: a secret key set explicitly, of
32 bytes or more (it signs every unsubscribe link, so it must be the same on every machine
and survive a reinstall; every command but this one, `web`, `worker`, `send` and `inbound`
among them, refuses a blank or short one) and a return path, so bounces come back to `newsletter inbound`.

:func:`run_checks` looks at the settings and the lists' From addresses and returns one
:class:`Check` per rule; a ``missing`` check is a gap (the CLI exits 1), a ``warn`` is
advice. No DNS records are looked up: the records to publish are printed instead, and a
published DKIM record can be given to compare with the key. :func:`check_relays` connects to
each SMTP relay as a worker would (greeting, EHLO, TLS, AUTH) and names each by host:port. :func:`check_one_click` POSTs
to the live app, for ``newsletter doctor --check-web``.
"""

from __future__ import annotations

import ipaddress
import ssl
import stat
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter.config import (
    MAKE_SECRET,
    MIN_OLD_SECRET_BYTES,
    MIN_SECRET_BYTES,
    Settings,
    SmtpRelay,
    secret_key_problem,
)
from newsletter.errors import InvalidInput, SmtpUnreachable
from newsletter.mail import dkim_keys
from newsletter.mail.messages import sender_domain
from newsletter.mail.transport import SmtpTransport

OK, MISSING, WARN, INFO = "ok", "missing", "warn", "info"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, missing (a gap: required and not in place), warn (advice), info
    detail: str
    fix: str = ""

    @property
    def gap(self) -> bool:
        return self.status == MISSING


@dataclass(frozen=True)
class ListSender:
    slug: str
    from_email: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    records: list[tuple[str, str]] = field(default_factory=list)  # (what, the record in zone-file form)

    @property
    def gaps(self) -> list[Check]:
        return [c for c in self.checks if c.gap]

    def add(self, name: str, status: str, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))


def run_checks(
    settings: Settings,
    *,
    secret_key_set: bool,
    lists: Sequence[ListSender] | None,
    database_problem: str | None = None,
    dns_record: str | None = None,
    web_check: Check | None = None,
    smtp_checks: Sequence[Check] = (),
) -> Report:
    """Every check, in the order they are printed.

    ``secret_key_set``: NEWSLETTER_SECRET_KEY is in the environment (not the development key
    file). ``lists``: every list's From address, or None with ``database_problem`` saying why
    they could not be read. ``dns_record``: the DKIM record as published, to compare with the
    key. ``web_check``: the result of :func:`check_one_click`, if it was run. ``smtp_checks``:
    :func:`check_relays`' results, if the SMTP relays were tried.
    """
    report = Report()
    key = _check_dkim(report, settings, dns_record)
    from_domains = _check_lists(report, lists, database_problem)
    _check_alignment(report, settings, from_domains)
    _check_return_path(report, settings, from_domains)
    if settings.postal_address:
        report.add("Postal address", OK, f"printed in every footer: {settings.postal_address}")
    else:
        report.add(
            "Postal address",
            MISSING,
            "NEWSLETTER_POSTAL_ADDRESS is empty",
            "set it to your postal address; every email's footer prints it (CAN-SPAM)",
        )
    https = settings.base_url.startswith("https://")
    if https:
        report.add("Base URL", OK, f"{settings.base_url} (https)")
    else:
        report.add(
            "Base URL",
            MISSING,
            f"NEWSLETTER_BASE_URL is {settings.base_url}, not https",
            "serve the web app behind TLS and set NEWSLETTER_BASE_URL=https://...; one-click "
            "unsubscribe (RFC 8058) needs an https URL, and every link in every email uses it",
        )
    _check_secret_keys(report, settings, secret_key_set)
    _check_unsubscribe(report, settings, https, web_check)
    report.checks.extend(smtp_checks)
    _records(report, settings, key, from_domains)
    return report


def check_relays(
    settings: Settings, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
) -> list[Check]:
    """Connect to each SMTP relay of NEWSLETTER_SMTP_URL as a worker would (connect, EHLO, TLS, AUTH, QUIT):
    one check per relay, named by host:port (never the password); a relay that fails is a gap."""
    return [check_relay(relay, timeout=timeout, ssl_context=ssl_context) for relay in settings.smtp_relays]


def check_relay(relay: SmtpRelay, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> Check:
    """One relay's check (see :func:`check_relays`). Raises nothing."""
    name = f"SMTP relay {relay.name}"
    smtp = relay.smtp
    try:
        with SmtpTransport(smtp, timeout=timeout, ssl_context=ssl_context) as transport:
            transport.connect()
            encrypted = transport.encrypted
    except SmtpUnreachable as exc:
        reason = str(exc).removeprefix(f"cannot connect to SMTP server {relay.name}: ")
        return Check(
            name,
            MISSING,
            f"{relay.name} cannot be used: {reason}",
            "check that the relay is running and reachable from the workers, and its entry in NEWSLETTER_SMTP_URL "
            "(scheme for TLS, port, user and password); while it fails, the workers set it aside and send through "
            "the other relays, if there are any",
        )
    tls = {"tls": "implicit TLS", "starttls": "STARTTLS, certificate verified"}.get(
        smtp.security, "STARTTLS (certificate not checked)" if encrypted else "plain text (no STARTTLS offered)"
    )
    auth = f"logged in as {smtp.username}" if smtp.username else "no login"
    detail = f"connected, EHLO accepted, {tls}, {auth}; weight {relay.weight}"
    if not encrypted and smtp.username:
        return Check(name, WARN, detail, "the password goes over plain text: use smtp+starttls:// or smtps://")
    return Check(name, OK, detail)


def _check_secret_keys(report: Report, settings: Settings, secret_key_set: bool) -> None:
    """The key that signs every link: set, not blank, 32 bytes or more; and the old keys still accepted."""
    make = f"make one with: {MAKE_SECRET}"
    if not secret_key_set:
        report.add(
            "Secret key",
            MISSING,
            f"NEWSLETTER_SECRET_KEY is unset: links are signed with the development key in {settings.var_dir}/secret_key",
            f"set NEWSLETTER_SECRET_KEY to at least {MIN_SECRET_BYTES} random bytes, the same on every machine "
            f"(unsubscribe links in sent emails must keep working); {make}",
        )
    elif (problem := secret_key_problem(settings.secret_key)) is not None:
        report.add(
            "Secret key",
            MISSING,
            f"NEWSLETTER_SECRET_KEY is {problem.split(';')[0]}: web, worker, send, inbound and every other "
            "command but doctor refuse to start",
            f"{make}, set it on every machine, and put the old value in NEWSLETTER_SECRET_KEY_OLD "
            "so links already mailed keep working",
        )
    else:
        report.add(
            "Secret key", OK, f"NEWSLETTER_SECRET_KEY is set ({len(settings.secret_key.strip().encode())} bytes)"
        )
    for number, key in enumerate(settings.old_secret_keys, 1):
        size = len(key.encode())
        name = f"NEWSLETTER_SECRET_KEY_OLD: key {number} of {len(settings.old_secret_keys)}"
        if size < MIN_OLD_SECRET_BYTES:
            report.add(
                "Old secret key",
                MISSING,
                f"{name} is {size} bytes: every command but doctor refuses it",
                "remove it (no key this short was ever accepted)",
            )
        elif size < MIN_SECRET_BYTES:
            report.add(
                "Old secret key",
                WARN,
                f"{name} is {size} bytes, under {MIN_SECRET_BYTES}: links signed with it are still accepted, "
                "and a short key is easier to guess",
                "remove it once the links signed with it have aged out",
            )


def _check_dkim(report: Report, settings: Settings, dns_record: str | None) -> rsa.RSAPrivateKey | None:
    dkim = settings.dkim
    if dkim is None:
        report.add(
            "DKIM signing",
            MISSING,
            "messages go out unsigned (NEWSLETTER_DKIM_* unset)",
            "run `newsletter dkim keygen --domain YOUR-FROM-DOMAIN --selector nl1`, publish the record it "
            "prints, and set the three settings it names",
        )
        return None
    report.add("DKIM signing", OK, f"d={dkim.domain} s={dkim.selector}")
    key = _check_dkim_key(report, dkim.private_key_file)
    if key is not None:
        _check_dkim_record(report, dkim_keys.record_name(dkim.selector, dkim.domain), dns_record, key)
    return key


def _check_dkim_key(report: Report, path: Path) -> rsa.RSAPrivateKey | None:
    """The signing key, if it loads; its size and the file's mode are checked."""
    try:
        key = dkim_keys.load_private_key(path)
    except dkim_keys.KeyProblem as exc:
        report.add(
            "DKIM key",
            MISSING,
            str(exc),
            "point NEWSLETTER_DKIM_PRIVATE_KEY_FILE at the PEM RSA key `newsletter dkim keygen` wrote",
        )
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    detail = f"{path}: {key.key_size}-bit RSA, mode {mode:04o}"
    if key.key_size < dkim_keys.RECOMMENDED_BITS:
        report.add(
            "DKIM key",
            WARN,
            detail + f"; under {dkim_keys.RECOMMENDED_BITS} bits",
            f"make a {dkim_keys.RECOMMENDED_BITS}-bit key under a new selector (`newsletter dkim keygen`), "
            "publish it, then switch",
        )
    elif mode & 0o077:
        report.add("DKIM key", WARN, detail + "; readable by other users", f"chmod 600 {path}")
    else:
        report.add("DKIM key", OK, detail)
    return key


def _check_dkim_record(report: Report, name: str, dns_record: str | None, key: rsa.RSAPrivateKey) -> None:
    """The published record at ``name``, when given, against the key (no DNS lookups are made)."""
    if dns_record is None:
        report.add(
            "DKIM DNS record",
            INFO,
            f"not compared (no DNS lookups): publish the record below at {name}",
            "give the published value with --dns-record to compare it with the key",
        )
        return
    try:
        matches = dkim_keys.record_matches(dns_record, key)
    except InvalidInput as exc:
        report.add("DKIM DNS record", MISSING, f"--dns-record: {exc.message}", f"publish the record below at {name}")
        return
    if matches:
        report.add("DKIM DNS record", OK, f"the given record at {name} carries this key's public half")
    else:
        report.add(
            "DKIM DNS record",
            MISSING,
            "the given record does not match the private key",
            f"publish the record below at {name} (receivers would reject every signature)",
        )


def _check_lists(report: Report, lists: Sequence[ListSender] | None, problem: str | None) -> dict[str, list[str]]:
    """The lists' From domains, each with the slugs using it."""
    if lists is None:
        report.add("Lists", MISSING, f"cannot read the lists: {problem}", "run `newsletter db upgrade`")
        return {}
    domains: dict[str, list[str]] = {}
    for item in lists:
        domains.setdefault(sender_domain(item.from_email), []).append(item.slug)
    if not lists:
        report.add("Lists", INFO, "no lists yet: alignment is checked against their From addresses once there are")
    return domains


def _check_alignment(report: Report, settings: Settings, from_domains: dict[str, list[str]]) -> None:
    if settings.dkim is None:
        return
    for domain, slugs in sorted(from_domains.items()):
        named = f"From domain {domain} ({', '.join(slugs)})"
        if aligned(domain, settings.dkim.domain):
            report.add("DMARC alignment", OK, f"{named} aligns with d={settings.dkim.domain}")
        else:
            report.add(
                "DMARC alignment",
                MISSING,
                f"{named} does not align with d={settings.dkim.domain}",
                f"sign with a key of {domain} (`newsletter dkim keygen --domain {domain} ...`), "
                "or send these lists from an address on the DKIM domain",
            )


def _check_return_path(report: Report, settings: Settings, from_domains: dict[str, list[str]]) -> None:
    if settings.return_path is None:
        report.add(
            "Return path",
            MISSING,
            "NEWSLETTER_RETURN_PATH is unset: bounces go to each list's From address and are not read",
            "set NEWSLETTER_RETURN_PATH=bounces@YOUR-FROM-DOMAIN and route that address's mail to `newsletter inbound`",
        )
        return
    domain = settings.return_path.rpartition("@")[2]
    apart = sorted(d for d in from_domains if not aligned(d, domain))
    if apart:
        report.add(
            "Return path",
            WARN,
            f"{settings.return_path}: envelope domain {domain} does not align with "
            f"{', '.join(apart)}, so SPF cannot pass DMARC for them (DKIM still can)",
            "use a bounce address on (a subdomain of) the From domain",
        )
    else:
        report.add(
            "Return path",
            OK,
            f"VERP envelope senders {settings.return_path.replace('@', '+d<id>-<mac>@')}"
            + (f", aligned with {', '.join(sorted(from_domains))}" if from_domains else ""),
        )


def _check_unsubscribe(report: Report, settings: Settings, https: bool, web_check: Check | None) -> None:
    link = f"{settings.base_url}/unsubscribe/TOKEN"
    if https:
        report.add("One-click unsubscribe", OK, f"List-Unsubscribe <{link}> and List-Unsubscribe-Post on every message")
    else:
        report.add(
            "One-click unsubscribe",
            MISSING,
            f"List-Unsubscribe points at {link}: RFC 8058 needs https",
            "set NEWSLETTER_BASE_URL to the https URL of the web app",
        )
    if web_check is not None:
        report.checks.append(web_check)
    else:
        report.add(
            "Unsubscribe endpoint", INFO, "not contacted", "run `newsletter doctor --check-web` with the web app up"
        )


def check_one_click(base_url: str, *, timeout: float = 10.0) -> Check:
    """POST a one-click unsubscribe with an invalid token to the live app: it must answer with its 400/404 page."""
    url = f"{base_url}/unsubscribe/doctor-check.invalid-token"
    request = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "newsletter-doctor"},
    )
    name = "Unsubscribe endpoint"
    fix = "start the web app (`newsletter web`) behind NEWSLETTER_BASE_URL, reachable from the internet"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(name, MISSING, f"POST {url}: no answer ({reason})", fix)
    if status in (400, 404):
        return Check(
            name, OK, f"POST {url} answered {status}: the app rejects a bad token, so it receives one-click POSTs"
        )
    return Check(name, MISSING, f"POST {url} answered {status}, not the app's 400 for a bad token", fix)


def _records(
    report: Report, settings: Settings, key: rsa.RSAPrivateKey | None, from_domains: dict[str, list[str]]
) -> None:
    if settings.dkim is not None and key is not None:
        report.records.append(
            ("DKIM: the public key", dkim_keys.zone_line(settings.dkim.selector, settings.dkim.domain, key))
        )
    envelope_domains = (
        [settings.return_path.rpartition("@")[2]] if settings.return_path else sorted(from_domains)
    ) or ["YOUR-DOMAIN"]
    for domain in envelope_domains:
        report.records.append(
            (
                "SPF: the servers that may send with this envelope domain (add your relay's include: if it has one)",
                f'{domain}. IN TXT "v=spf1 {_spf_mechanism(settings.smtp.host)} ~all"',
            )
        )
    for domain in sorted(from_domains) or ["YOUR-FROM-DOMAIN"]:
        report.records.append(
            (
                "DMARC: start with p=none, read the reports, then move to p=quarantine or p=reject",
                f'_dmarc.{domain}. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}; adkim=r; aspf=r"',
            )
        )


def _spf_mechanism(smtp_host: str) -> str:
    try:
        address = ipaddress.ip_address(smtp_host)
    except ValueError:
        if smtp_host != "localhost":
            return f"a:{smtp_host}"
        address = ipaddress.ip_address("127.0.0.1")
    if address.is_loopback or address.is_private:
        return "ip4:YOUR.SERVER.PUBLIC.IP"  # the local relay sends from this machine's public address
    return f"ip{address.version}:{address}"


# --- DMARC alignment ------------------------------------------------------------------

# Second-level labels under which country-code registries hand out names (example.co.uk):
# without the Public Suffix List, a guess that covers the common cases.
_PUBLIC_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "ltd", "ne", "net", "or", "org", "plc", "sch"})


def organisational_domain(domain: str) -> str:
    """The registered domain (``news.example.co.uk`` -> ``example.co.uk``), guessed without the Public Suffix List."""
    labels = domain.lower().rstrip(".").split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _PUBLIC_SECOND_LEVEL else 2
    return ".".join(labels[-keep:])


def aligned(from_domain: str, other: str) -> bool:
    """DMARC relaxed alignment (RFC 7489 section 3.1): the same organisational domain."""
    a, b = from_domain.lower().rstrip("."), other.lower().rstrip(".")
    return a == b or organisational_domain(a) == organisational_domain(b)
