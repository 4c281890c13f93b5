"""Settings, read once from the environment at each edge (CLI, worker, web) and passed down.

Domain code never reads ``os.environ``: it receives a :class:`Settings` (or the few values
it needs). Every problem with a value raises :class:`~newsletter.errors.ConfigError` whose
message starts with the variable's name.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from newsletter.errors import ConfigError

PREFIX = "NEWSLETTER_"

#: Every setting with its default and meaning; README's table is written from this.
DOCUMENTED: dict[str, tuple[str, str]] = {
    "NEWSLETTER_VAR_DIR": ("./var", "Folder for local state: the SQLite database, the embedded Redis, previews."),
    "NEWSLETTER_DATABASE_URL": (
        "sqlite:///$NEWSLETTER_VAR_DIR/newsletter.db",
        "SQLAlchemy URL. SQLite (WAL mode) by default; postgresql+psycopg://user@host/db in production.",
    ),
    "NEWSLETTER_BROKER_URL": (
        "(unset: embedded Redis under $NEWSLETTER_VAR_DIR)",
        "Redis URL of the Celery broker, e.g. redis://127.0.0.1:6379/0.",
    ),
    "NEWSLETTER_SMTP_URL": (
        "smtp://127.0.0.1:1025",
        "Outgoing SMTP server: smtp://[user:pass@]host:port (upgraded with STARTTLS when offered, "
        "certificate unchecked), smtp+starttls:// (STARTTLS required, certificate verified), smtps:// (implicit TLS). "
        "Several relays: comma-separated URLs, each with an optional ?weight=N (default 1); batches are spread by "
        "weight, and a relay that refuses, times out or answers 421 cools down while the others take its work.",
    ),
    "NEWSLETTER_BASE_URL": ("http://localhost:8000", "Public URL of the web app, used in every link in an email."),
    "NEWSLETTER_SECRET_KEY": (
        "(unset: a random key kept in $NEWSLETTER_VAR_DIR/secret_key)",
        "Key that signs unsubscribe, confirmation and preference links: at least 32 random bytes, the same on every "
        "machine. Set it in production; an empty, blank or shorter value stops every command but `doctor`.",
    ),
    "NEWSLETTER_SECRET_KEY_OLD": (
        "(empty)",
        "Previous secret keys, comma-separated: links signed with them still work during a key rotation "
        "(each at least 16 bytes; `doctor` warns under 32).",
    ),
    "NEWSLETTER_CONFIRM_DAYS": ("7", "Days a double opt-in confirmation link stays valid."),
    "NEWSLETTER_PREFERENCES_DAYS": (
        "90",
        "Days a preferences link stays valid; an expired one offers to mail a fresh link. Unsubscribe links never expire.",
    ),
    "NEWSLETTER_IMPORT_MAX_MB": (
        "200",
        "Largest CSV import upload, in MB (admin UI and POST /api/imports); it is written to disk as it arrives.",
    ),
    "NEWSLETTER_MEDIA_MAX_MB": (
        "10",
        "Largest image upload to the media library, in MB (admin UI, POST /api/media, `media add`); a larger "
        "upload gets 413 before the rest of it is read.",
    ),
    "NEWSLETTER_MEDIA_S3_BUCKET": (
        "(unset: files under $NEWSLETTER_VAR_DIR/media)",
        "Keep the media library's files in this S3 bucket instead (needs the s3 extra: boto3); credentials and "
        "region from the usual AWS_* variables. The app still serves them from its own /media/ URL.",
    ),
    "NEWSLETTER_MEDIA_S3_ENDPOINT": (
        "(unset: Amazon S3)",
        "URL of another S3-compatible store for NEWSLETTER_MEDIA_S3_BUCKET, e.g. http://minio:9000.",
    ),
    "NEWSLETTER_MEDIA_S3_PREFIX": (
        "(empty)",
        "A key prefix for the media files in NEWSLETTER_MEDIA_S3_BUCKET, e.g. newsletter/media/.",
    ),
    "NEWSLETTER_SUBSCRIBE_LIMIT": (
        "10",
        "Subscribe form posts allowed per IP address (IPv6: per /64) per hour, shared in Redis; 0 turns the limit off.",
    ),
    "NEWSLETTER_TRUSTED_PROXIES": (
        "(empty: no proxy is believed)",
        "Comma-separated addresses or networks (CIDR) of your reverse proxies: X-Forwarded-For and X-Forwarded-Proto "
        "are believed only from them; from anyone else the connection's address is the client.",
    ),
    "NEWSLETTER_POSTAL_ADDRESS": ("(empty)", "Your postal address, printed in every email's footer (CAN-SPAM)."),
    "NEWSLETTER_TEMPLATE_DIR": (
        "(unset: templates/email in this repo)",
        "A folder of your own email templates; files there override the built-in ones of the same name.",
    ),
    "NEWSLETTER_BATCH_SIZE": ("500", "Recipients per Celery task."),
    "NEWSLETTER_SEND_RATE": ("0", "Messages per second across all workers together; 0 means no limit."),
    "NEWSLETTER_DOMAIN_RATES": (
        "(unset: no pacing per receiving domain)",
        "Messages per receiving domain across all workers together, e.g. gmail.com=50/s,yahoo.com=20/s,*=500/s "
        "(per second /s, minute /m or hour /h; * is each other domain's own rate, unset: unpaced). A 421 or 4.7.x "
        "answer halves that domain's rate (down to 1/64 of it, or 1/m), which climbs back after a minute without one.",
    ),
    "NEWSLETTER_MAX_ATTEMPTS": (
        "5",
        "Attempts per recipient on temporary errors (4xx, a connection lost mid-message) before giving up; "
        "an SMTP server that cannot be reached uses up none (the send waits for it).",
    ),
    "NEWSLETTER_RETRY_DELAY": (
        "60",
        "Seconds before the first retry of a temporary error; each further retry waits twice as long.",
    ),
    "NEWSLETTER_PAUSE_ERROR_RATE": (
        "0.2",
        "A send pauses itself when this share of its attempts failed (once 50 were made); 1 turns it off.",
    ),
    "NEWSLETTER_REPORT_WINDOW_DAYS": (
        "30",
        "Days a tracked send keeps its readers' events apart (unique counts) before they are rolled up into "
        "hourly counts and the key that told readers apart is deleted.",
    ),
    "NEWSLETTER_TRACKING_RETENTION_DAYS": (
        "180",
        "Days a list with individual tracking keeps each subscriber's opens and clicks (erased with the subscriber).",
    ),
    "NEWSLETTER_PRIVACY_PROXY_RANGES": (
        "(unset)",
        "A file of privacy proxies' networks (one per line, first column: Apple's egress-ip-ranges.csv as "
        "published): opens from them count as machine opens.",
    ),
    "NEWSLETTER_STALL_SECONDS": (
        "30",
        "Seconds a sending send's due work may wait untaken before its status names the problem "
        "(no worker, workers busy or stuck).",
    ),
    "NEWSLETTER_LOG_FORMAT": (
        "text",
        "Log lines of the worker, scheduler, web and inbound processes: text, or json (one object per line, "
        "with send_id and delivery_id fields where they apply).",
    ),
    "NEWSLETTER_DKIM_DOMAIN": ("(unset: no DKIM signature)", "Domain that signs every message (d=), e.g. example.com."),
    "NEWSLETTER_DKIM_SELECTOR": ("(unset)", "DKIM selector (s=): the key is published at SELECTOR._domainkey.DOMAIN."),
    "NEWSLETTER_DKIM_PRIVATE_KEY_FILE": (
        "(unset)",
        "PEM file of the RSA private key (`newsletter dkim keygen` writes one and prints the DNS record).",
    ),
    "NEWSLETTER_RETURN_PATH": (
        "(unset: the list's From address)",
        "Bounce address, e.g. bounces@example.com: each delivery's envelope sender becomes bounces+TOKEN@example.com "
        "(VERP), so every bounce names its delivery. Route that domain's mail to `newsletter inbound`.",
    ),
    "NEWSLETTER_SOFT_BOUNCE_LIMIT": (
        "3",
        "Soft bounces within NEWSLETTER_SOFT_BOUNCE_DAYS after which an address is suppressed.",
    ),
    "NEWSLETTER_SOFT_BOUNCE_DAYS": ("30", "The window, in days, in which soft bounces are counted."),
    "NEWSLETTER_WEBHOOK_SECRET": (
        "(unset: the generic bounce webhook is off)",
        "Shared secret of the generic JSON bounce webhook (POST /webhooks/events, `Authorization: Bearer SECRET`).",
    ),
    "NEWSLETTER_SES_TOPIC_ARNS": (
        "(unset: the SES webhook is off)",
        "Comma-separated SNS topic ARNs whose signed SES bounce and complaint notifications are accepted at POST /webhooks/ses.",
    ),
    "NEWSLETTER_SES_MAX_AGE": (
        "3600",
        "Seconds after its signed Timestamp that an SES notification is still taken at POST /webhooks/ses; "
        "an older one is refused (403) as a replay.",
    ),
    "NEWSLETTER_METRICS_TOKEN": (
        "(unset: GET /metrics answers 404)",
        "Bearer token that opens GET /metrics (`Authorization: Bearer TOKEN`, as Prometheus sends it): at least 32 "
        "characters of letters, digits and - . _ ~ + / =.",
    ),
}


@dataclass(frozen=True)
class SmtpSettings:
    """Where outgoing mail goes. ``security`` is "none", "starttls" or "tls"."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: str = "none"


@dataclass(frozen=True)
class SmtpRelay:
    """One of several SMTP relays and its share of the batches (``weight``, 1 or more)."""

    smtp: SmtpSettings
    weight: int = 1

    @property
    def name(self) -> str:
        """How logs, status and doctor name it: ``host:port`` (never the password)."""
        return f"{self.smtp.host}:{self.smtp.port}"


#: The largest weight a relay may have (NEWSLETTER_SMTP_URL's ``?weight=``).
MAX_RELAY_WEIGHT = 1000


@dataclass(frozen=True)
class DkimSettings:
    """How messages are signed: the domain (d=), selector (s=) and the PEM private key file."""

    domain: str
    selector: str
    private_key_file: Path


@dataclass(frozen=True)
class MediaS3Settings:
    """The S3 bucket (on Amazon S3, or another S3-compatible store at ``endpoint``) of the media library."""

    bucket: str
    endpoint: str | None = None
    prefix: str = ""


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    broker_url: str | None
    smtp: SmtpSettings
    base_url: str
    secret_key: str = field(repr=False)
    postal_address: str
    template_dir: Path | None
    batch_size: int
    send_rate: float
    max_attempts: int = 5
    # (domain, messages per second) per NEWSLETTER_DOMAIN_RATES entry, "*" for every other domain; () = no pacing
    domain_rates: tuple[tuple[str, float], ...] = ()
    retry_delay: float = 60.0
    pause_error_rate: float = 0.2
    old_secret_keys: tuple[str, ...] = field(default=(), repr=False)
    confirm_days: float = 7.0
    preferences_days: float = 90.0
    subscribe_limit: int = 10
    import_max_mb: int = 200  # the largest CSV import upload (newsletter.http.body_limits)
    media_max_mb: int = 10  # the largest image upload to the media library
    media_s3: MediaS3Settings | None = None  # None: the library's files are under var_dir/media
    dkim: DkimSettings | None = None
    return_path: str | None = None
    soft_bounce_limit: int = 3
    soft_bounce_days: float = 30.0
    webhook_secret: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)  # None: /metrics is not served
    ses_topic_arns: tuple[str, ...] = ()
    ses_max_age: float = 3600.0  # seconds: an older SES notification is refused as a replay
    log_format: str = "text"
    stall_seconds: float = 30.0
    trusted_proxies: tuple[str, ...] = ()  # networks, e.g. "127.0.0.1/32": whose X-Forwarded-* headers are believed
    report_window_days: float = 30.0
    tracking_retention_days: float = 180.0
    privacy_proxy_ranges: Path | None = None
    relays: tuple[SmtpRelay, ...] = ()  # every relay of NEWSLETTER_SMTP_URL; empty: ``smtp`` alone (see smtp_relays)

    @property
    def smtp_relays(self) -> tuple[SmtpRelay, ...]:
        """The SMTP relays, at least one: ``smtp`` (the first) with weight 1 when only it is set."""
        return self.relays or (SmtpRelay(self.smtp),)

    @property
    def smtp_names(self) -> str:
        """The relays as ``host:port``, comma-separated (no passwords): for logs and messages."""
        return ", ".join(r.name for r in self.smtp_relays)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, check_secret_key: bool = True) -> Settings:
        """Build settings from an environment mapping.

        Raises ConfigError naming the first variable that is malformed or unknown. With
        ``check_secret_key`` false a weak secret key is kept as it is (for `newsletter doctor`,
        which reports it instead of stopping; see :func:`secret_key_problem`).
        """
        unknown = sorted(k for k in environ if k.startswith(PREFIX) and k not in DOCUMENTED)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting (known: {', '.join(sorted(DOCUMENTED))})")
        var_dir = Path(environ.get("NEWSLETTER_VAR_DIR") or "./var")
        relays = parse_smtp_relays(environ.get("NEWSLETTER_SMTP_URL") or "smtp://127.0.0.1:1025")
        return cls(
            var_dir=var_dir,
            database_url=_database_url(environ.get("NEWSLETTER_DATABASE_URL"), var_dir),
            broker_url=_broker_url(environ.get("NEWSLETTER_BROKER_URL")),
            smtp=relays[0].smtp,
            relays=relays,
            base_url=_base_url(environ.get("NEWSLETTER_BASE_URL") or "http://localhost:8000"),
            secret_key=_secret_key(environ.get("NEWSLETTER_SECRET_KEY"), var_dir, check=check_secret_key),
            postal_address=_one_line("NEWSLETTER_POSTAL_ADDRESS", environ.get("NEWSLETTER_POSTAL_ADDRESS", "")),
            template_dir=_template_dir(environ.get("NEWSLETTER_TEMPLATE_DIR")),
            batch_size=_int("NEWSLETTER_BATCH_SIZE", environ.get("NEWSLETTER_BATCH_SIZE"), 500, minimum=1),
            send_rate=_float("NEWSLETTER_SEND_RATE", environ.get("NEWSLETTER_SEND_RATE"), 0.0),
            domain_rates=parse_domain_rates(environ.get("NEWSLETTER_DOMAIN_RATES", "")),
            max_attempts=_int("NEWSLETTER_MAX_ATTEMPTS", environ.get("NEWSLETTER_MAX_ATTEMPTS"), 5, minimum=1),
            retry_delay=_float("NEWSLETTER_RETRY_DELAY", environ.get("NEWSLETTER_RETRY_DELAY"), 60.0),
            pause_error_rate=_float("NEWSLETTER_PAUSE_ERROR_RATE", environ.get("NEWSLETTER_PAUSE_ERROR_RATE"), 0.2),
            old_secret_keys=_old_secret_keys(environ.get("NEWSLETTER_SECRET_KEY_OLD", ""), check=check_secret_key),
            confirm_days=_float("NEWSLETTER_CONFIRM_DAYS", environ.get("NEWSLETTER_CONFIRM_DAYS"), 7.0),
            preferences_days=_positive_days(
                "NEWSLETTER_PREFERENCES_DAYS", environ.get("NEWSLETTER_PREFERENCES_DAYS"), 90.0
            ),
            subscribe_limit=_int(
                "NEWSLETTER_SUBSCRIBE_LIMIT", environ.get("NEWSLETTER_SUBSCRIBE_LIMIT"), 10, minimum=0
            ),
            import_max_mb=_int("NEWSLETTER_IMPORT_MAX_MB", environ.get("NEWSLETTER_IMPORT_MAX_MB"), 200, minimum=1),
            media_max_mb=_int("NEWSLETTER_MEDIA_MAX_MB", environ.get("NEWSLETTER_MEDIA_MAX_MB"), 10, minimum=1),
            media_s3=_media_s3(environ),
            dkim=_dkim(environ),
            return_path=_return_path(environ.get("NEWSLETTER_RETURN_PATH")),
            soft_bounce_limit=_int(
                "NEWSLETTER_SOFT_BOUNCE_LIMIT", environ.get("NEWSLETTER_SOFT_BOUNCE_LIMIT"), 3, minimum=1
            ),
            soft_bounce_days=_float("NEWSLETTER_SOFT_BOUNCE_DAYS", environ.get("NEWSLETTER_SOFT_BOUNCE_DAYS"), 30.0),
            webhook_secret=_webhook_secret(environ.get("NEWSLETTER_WEBHOOK_SECRET")),
            metrics_token=_metrics_token(environ.get("NEWSLETTER_METRICS_TOKEN")),
            log_format=_choice("NEWSLETTER_LOG_FORMAT", environ.get("NEWSLETTER_LOG_FORMAT"), ("text", "json")),
            stall_seconds=_positive(
                _float("NEWSLETTER_STALL_SECONDS", environ.get("NEWSLETTER_STALL_SECONDS"), 30.0),
                "NEWSLETTER_STALL_SECONDS",
            ),
            ses_topic_arns=tuple(
                a.strip() for a in environ.get("NEWSLETTER_SES_TOPIC_ARNS", "").split(",") if a.strip()
            ),
            ses_max_age=_positive(
                _float("NEWSLETTER_SES_MAX_AGE", environ.get("NEWSLETTER_SES_MAX_AGE"), 3600.0),
                "NEWSLETTER_SES_MAX_AGE",
            ),
            trusted_proxies=_networks("NEWSLETTER_TRUSTED_PROXIES", environ.get("NEWSLETTER_TRUSTED_PROXIES", "")),
            report_window_days=_positive_days(
                "NEWSLETTER_REPORT_WINDOW_DAYS", environ.get("NEWSLETTER_REPORT_WINDOW_DAYS"), 30.0
            ),
            tracking_retention_days=_positive_days(
                "NEWSLETTER_TRACKING_RETENTION_DAYS", environ.get("NEWSLETTER_TRACKING_RETENTION_DAYS"), 180.0
            ),
            privacy_proxy_ranges=_readable_file(
                "NEWSLETTER_PRIVACY_PROXY_RANGES", environ.get("NEWSLETTER_PRIVACY_PROXY_RANGES")
            ),
        )


def parse_smtp_relays(value: str) -> tuple[SmtpRelay, ...]:
    """Parse NEWSLETTER_SMTP_URL: one URL as :func:`parse_smtp_url` takes it, or several, comma-separated,
    each with an optional ``?weight=N`` (1 to MAX_RELAY_WEIGHT, default 1). Raises ConfigError naming the bad
    part (its position and the URL without its password)."""
    parts = value.split(",")
    if len(parts) == 1:
        url, weight = _weighted(value, "NEWSLETTER_SMTP_URL")
        return (SmtpRelay(parse_smtp_url(url), weight),)
    relays: list[SmtpRelay] = []
    for number, part in enumerate(parts, 1):
        name = f"NEWSLETTER_SMTP_URL, relay {number} of {len(parts)}"
        if not part.strip():
            raise ConfigError(f"{name}: empty; expected comma-separated SMTP URLs, e.g. smtp://a:25,smtp://b:25")
        url, weight = _weighted(part.strip(), name)
        relays.append(SmtpRelay(_parse_smtp_url(url, name, shown=_without_password(url)), weight))
    seen: set[str] = set()
    for relay in relays:
        if relay.name in seen:
            raise ConfigError(
                f"NEWSLETTER_SMTP_URL: relay {relay.name} is listed twice; give it a higher weight instead"
            )
        seen.add(relay.name)
    return tuple(relays)


def _weighted(url: str, name: str) -> tuple[str, int]:
    """The URL without its ``weight=`` query, and the weight (1 when none is given). Raises ConfigError."""
    base, mark, query = url.partition("?")
    if not mark:
        return url, 1
    shown = _without_password(base)
    key, equals, number = query.partition("=")
    if key != "weight" or not equals or "&" in number:
        raise ConfigError(f"{name}: unexpected query {query!r} in {shown!r}; the only one allowed is ?weight=N")
    if not (number.isascii() and number.isdigit()) or not 1 <= int(number) <= MAX_RELAY_WEIGHT:
        raise ConfigError(
            f"{name}: weight must be a whole number from 1 to {MAX_RELAY_WEIGHT}, not {number!r} (in {shown!r})"
        )
    return base, int(number)


#: Said with a malformed SMTP URL: a password's special characters are the usual cause.
_ENCODE_HINT = " (percent-encode @ : / ? # , in a user name or password, e.g. , as %2C)"


def _without_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``; with no ``@`` (a password cut
    short by a comma or a slash looks like ``host:port``), everything after ``host:`` is hidden too."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep:
        return url
    if not at:
        host, colon, port = rest.partition(":")
        return url if not colon or (port.isdecimal() and port.isascii()) else f"{scheme}://{host}:***"
    if ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"


def parse_smtp_url(value: str) -> SmtpSettings:
    """Parse ``smtp://[user:pass@]host:port`` and its TLS variants. Raises ConfigError."""
    return _parse_smtp_url(value, "NEWSLETTER_SMTP_URL", shown=_without_password(value))


def _parse_smtp_url(value: str, name: str, *, shown: str) -> SmtpSettings:
    expected = "expected smtp://[user:pass@]host:port, smtp+starttls://... or smtps://..."
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        # The parser's own words may quote the password ("Port could not be cast ... as 'pa'"): say it ourselves.
        what = "its port is not a number" if "port" in str(exc).lower() else "not a valid URL"
        raise ConfigError(f"{name}: {what} in {shown!r}; {expected}{_ENCODE_HINT}") from None
    schemes = {"smtp": ("none", 25), "smtp+starttls": ("starttls", 587), "smtps": ("tls", 465)}
    if parts.scheme not in schemes:
        raise ConfigError(f"{name}: unsupported scheme {parts.scheme!r} in {shown!r}; {expected}")
    if not parts.hostname:
        raise ConfigError(f"{name}: no host in {shown!r}; {expected}")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{name}: unexpected path or query in {shown!r}; {expected}{_ENCODE_HINT}")
    security, default_port = schemes[parts.scheme]
    return SmtpSettings(
        host=parts.hostname,
        port=port or default_port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        security=security,
    )


#: URLs whose checked form is known without SQLAlchemy's parser (importing it costs a CLI command
#: ~0.13 s): a SQLite file, or PostgreSQL with plain names and no query (``postgresql://`` gains
#: ``+psycopg`` as SQLAlchemy's rendering would give it). tests/test_config.py checks both agree.
_PLAIN_URL = re.compile(
    r"(?P<sqlite>sqlite(\+pysqlite)?:///[^?]*)"
    r"|postgresql(\+psycopg)?://(?P<rest>([\w.~-]+(:[\w.~-]*)?@)?[\w.-]+(:\d{1,5})?/[\w.-]+)",
    re.ASCII,
)


_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*/\s*([smh])", re.IGNORECASE | re.ASCII)
_DOMAIN_LABELS = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def parse_domain_rates(value: str) -> tuple[tuple[str, float], ...]:
    """NEWSLETTER_DOMAIN_RATES (``gmail.com=50/s,yahoo.com=20/s,*=500/s``) as (domain, messages per second) pairs.

    Domains are lower-cased and international ones given in their ASCII (A-label) form, as the
    transport puts them on the wire. Raises ConfigError naming the entry that is wrong.
    """
    name = "NEWSLETTER_DOMAIN_RATES"
    rates: dict[str, float] = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        domain, equals, rate = (part.strip() for part in entry.partition("="))
        match = _RATE.fullmatch(rate)
        if not equals or not domain or match is None:
            raise ConfigError(
                f"{name}: {entry!r} is not DOMAIN=NUMBER/s, /m or /h (e.g. gmail.com=50/s,yahoo.com=20/s,*=500/s)"
            )
        per_second = float(match.group(1)) / _RATE_UNITS[match.group(2).lower()]
        if per_second <= 0:
            raise ConfigError(f"{name}: {entry!r}: the rate must be more than 0")
        try:
            domain = ascii_domain(domain.removeprefix("@"))
        except ValueError:
            raise ConfigError(f"{name}: {entry!r}: {domain!r} is not a domain name (or *, every other)") from None
        if domain in rates:
            raise ConfigError(f"{name}: {entry!r}: {domain} is given twice")
        rates[domain] = per_second
    return tuple(rates.items())


def ascii_domain(domain: str) -> str:
    """A domain lower-cased, international ones in their ASCII (A-label) form; ``*`` as it is.

    Raises ValueError for what is not a domain name.
    """
    domain = domain.strip().rstrip(".").lower()
    if domain == "*":
        return domain
    if not domain.isascii():
        try:
            import idna  # IDNA 2008, installed with email-validator; as the SMTP transport encodes it

            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (UnicodeError, idna.IDNAError):
            raise ValueError(domain) from None
    if not _DOMAIN_LABELS.fullmatch(domain):
        raise ValueError(domain)
    return domain


def _database_url(value: str | None, var_dir: Path) -> str:
    if not value:
        return f"sqlite:///{var_dir / 'newsletter.db'}"
    plain = _PLAIN_URL.fullmatch(value)
    if plain:
        return value if plain["sqlite"] else f"postgresql+psycopg://{plain['rest']}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(f"NEWSLETTER_DATABASE_URL: not a database URL: {value!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"NEWSLETTER_DATABASE_URL: unsupported database {url.get_backend_name()!r}; use sqlite:// or postgresql+psycopg://"
        )
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        value = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return value


def _broker_url(value: str | None) -> str | None:
    if not value:
        return None
    if urlsplit(value).scheme not in ("redis", "rediss", "redis+socket"):
        raise ConfigError(f"NEWSLETTER_BROKER_URL: expected a Redis URL like redis://127.0.0.1:6379/0, got {value!r}")
    return value


def _base_url(value: str) -> str:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        # urlsplit drops CR, LF and tabs silently; the value itself goes into every List-Unsubscribe header.
        raise ConfigError("NEWSLETTER_BASE_URL: must not contain spaces, line breaks or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"NEWSLETTER_BASE_URL: expected an absolute http(s) URL like https://news.example.com, got {value!r}"
        )
    return value.rstrip("/")


#: The shortest secret key that signs links: 32 bytes (256 bits), HMAC-SHA256's own size.
MIN_SECRET_BYTES = 32
#: An old key shorter than this was never accepted as a key, so it is refused outright.
MIN_OLD_SECRET_BYTES = 16
#: How to make a key, for the messages that ask for one.
MAKE_SECRET = """python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"""


def secret_key_problem(value: str) -> str | None:
    """Why a NEWSLETTER_SECRET_KEY that is set cannot sign links (empty, blank, under 32 bytes), or None."""
    if not value:
        return f"set but empty; make a key with {MAKE_SECRET} (or unset the variable to use a development key)"
    if not value.strip():
        return f"only whitespace; make a key with {MAKE_SECRET}"
    size = len(value.strip().encode())
    if size < MIN_SECRET_BYTES:
        return f"too short ({size} bytes); use at least {MIN_SECRET_BYTES} random bytes: make a key with {MAKE_SECRET}"
    return None


def _secret_key(value: str | None, var_dir: Path, *, check: bool = True) -> str:
    if value is not None:
        problem = secret_key_problem(value)
        if problem and check:
            raise ConfigError(f"NEWSLETTER_SECRET_KEY: {problem}")
        return value
    # Development default: a random key kept beside the local database, so links stay valid
    # across restarts on this machine. Production sets the variable on every machine.
    path = var_dir / "secret_key"
    try:
        if not path.exists():
            _make_key_file(path)
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"NEWSLETTER_SECRET_KEY: unset, and no key could be kept in {path}: {exc.strerror}") from None
    if check and len(key.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"NEWSLETTER_SECRET_KEY: unset, and the development key in {path} is {len(key.encode())} bytes, under "
            f"{MIN_SECRET_BYTES}; delete that file to have a new one made, or set NEWSLETTER_SECRET_KEY"
        )
    return key


def _make_key_file(path: Path) -> None:
    """Write a new random key (43 characters, 256 bits) readable by its owner only, atomically:
    processes starting at once on a fresh folder all end up with the first one's key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spare = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(MIN_SECRET_BYTES) + "\n")
        try:
            os.link(spare, path)  # never replaces a key another process kept first
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: a rename, which a rare race may repeat
            os.replace(spare, path)
    finally:
        spare.unlink(missing_ok=True)


def _old_secret_keys(value: str, *, check: bool = True) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in value.split(",") if k.strip())
    for number, key in enumerate(keys, 1):
        if check and len(key.encode()) < MIN_OLD_SECRET_BYTES:
            raise ConfigError(
                f"NEWSLETTER_SECRET_KEY_OLD: key {number} of {len(keys)} is {len(key.encode())} bytes; an old key "
                f"shorter than {MIN_OLD_SECRET_BYTES} bytes was never a valid key (remove it)"
            )
    return keys


def _dkim(environ: Mapping[str, str]) -> DkimSettings | None:
    names = ("NEWSLETTER_DKIM_DOMAIN", "NEWSLETTER_DKIM_SELECTOR", "NEWSLETTER_DKIM_PRIVATE_KEY_FILE")
    values = [environ.get(n, "").strip() for n in names]
    if not any(values):
        return None
    for name, value in zip(names, values, strict=True):
        if not value:
            others = ", ".join(n for n in names if n != name)
            raise ConfigError(f"{name}: must be set too when {others} are (DKIM needs all three)")
    domain, selector, key_file = values
    if not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}", domain):
        raise ConfigError(f"NEWSLETTER_DKIM_DOMAIN: not a domain name: {domain!r}")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,62})", selector):
        raise ConfigError(f"NEWSLETTER_DKIM_SELECTOR: not a selector (letters, digits, . _ -): {selector!r}")
    path = Path(key_file)
    if not path.is_file():
        raise ConfigError(f"NEWSLETTER_DKIM_PRIVATE_KEY_FILE: no such file: {key_file!r}")
    return DkimSettings(domain=domain.lower(), selector=selector, private_key_file=path)


def _return_path(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9._%-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}", value) or "+" in value:
        raise ConfigError(
            f"NEWSLETTER_RETURN_PATH: expected a plain address like bounces@example.com (no '+'), got {value!r}"
        )
    return value.lower()


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> str:
    if not value:
        return choices[0]
    if value.strip().lower() not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value.strip().lower()


def _webhook_secret(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) < 16:
        raise ConfigError("NEWSLETTER_WEBHOOK_SECRET: too short; use at least 16 random characters")
    return value


def _networks(name: str, value: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks, each as a network ("10.0.0.5" becomes "10.0.0.5/32")."""
    import ipaddress

    networks = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        if item == "*":
            raise ConfigError(
                f"{name}: '*' would believe X-Forwarded-For from anyone; list your proxies' addresses "
                "or networks (e.g. 127.0.0.1 or 10.0.0.0/8)"
            )
        try:
            networks.append(str(ipaddress.ip_network(item)))
        except ValueError as exc:
            raise ConfigError(
                f"{name}: {item!r} is not an IP address or network like 10.0.0.5 or 10.0.0.0/8 ({exc})"
            ) from None
    return tuple(networks)


MIN_METRICS_TOKEN = 32


def _metrics_token(value: str | None) -> str | None:
    """The /metrics bearer token, or None (unset or empty: /metrics is not served)."""
    if not value:
        return None
    make = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    token = value.strip()
    if not token:
        raise ConfigError(f"NEWSLETTER_METRICS_TOKEN: only whitespace; {make} (or leave it empty to turn /metrics off)")
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", token):
        raise ConfigError(
            f"NEWSLETTER_METRICS_TOKEN: use only letters, digits and - . _ ~ + / = (it is sent in an HTTP "
            f"header); {make}"
        )
    if len(token) < MIN_METRICS_TOKEN:
        raise ConfigError(
            f"NEWSLETTER_METRICS_TOKEN: too short ({len(token)} characters); use at least "
            f"{MIN_METRICS_TOKEN} random characters: {make}"
        )
    return token


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _media_s3(environ: Mapping[str, str]) -> MediaS3Settings | None:
    bucket = environ.get("NEWSLETTER_MEDIA_S3_BUCKET", "").strip()
    endpoint = environ.get("NEWSLETTER_MEDIA_S3_ENDPOINT", "").strip() or None
    prefix = environ.get("NEWSLETTER_MEDIA_S3_PREFIX", "").strip()
    if not bucket:
        for name, value in (("NEWSLETTER_MEDIA_S3_ENDPOINT", endpoint), ("NEWSLETTER_MEDIA_S3_PREFIX", prefix)):
            if value:
                raise ConfigError(f"{name}: set NEWSLETTER_MEDIA_S3_BUCKET too (without it media files stay on disk)")
        return None
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"NEWSLETTER_MEDIA_S3_BUCKET: not a bucket name (3-63 lower-case letters, digits, dots, dashes): {bucket!r}"
        )
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(
                f"NEWSLETTER_MEDIA_S3_ENDPOINT: expected an http(s) URL like http://minio:9000, got {endpoint!r}"
            )
    if prefix.startswith("/") or any(c.isspace() or ord(c) < 32 for c in prefix):
        raise ConfigError(f"NEWSLETTER_MEDIA_S3_PREFIX: no leading slash, spaces or control characters: {prefix!r}")
    return MediaS3Settings(bucket=bucket, endpoint=endpoint, prefix=prefix)


def _template_dir(value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise ConfigError(f"NEWSLETTER_TEMPLATE_DIR: {value!r} is not a folder")
    return path


def _one_line(name: str, value: str) -> str:
    if any(ord(c) < 32 and c != "\t" for c in value):
        raise ConfigError(f"{name}: must be one line without control characters")
    return value.strip()


def _int(name: str, value: str | None, default: int, *, minimum: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {number}")
    return number


def _readable_file(name: str, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{name}: {value} is not a readable file")
    return path


def _positive_days(name: str, value: str | None, default: float) -> float:
    number = _float(name, value, default)
    if number <= 0:
        raise ConfigError(f"{name}: must be more than 0 (days), got {number:g}")
    return number


def _positive(number: float, name: str) -> float:
    if number <= 0:
        raise ConfigError(f"{name}: must be more than 0 (seconds), got {number:g}")
    return number


def _float(name: str, value: str | None, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name}: must not be negative, got {value}")
    return number
