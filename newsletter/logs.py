"""Logging for the long-running processes (worker, scheduler, web, inbound): text or JSON lines.

With NEWSLETTER_LOG_FORMAT=json every record is one JSON object with its time, level,
logger and message, plus the ids it was logged with (``extra={"send_id": ..., "delivery_id": ...}``),
so a log pipeline can follow one send or one delivery across processes.

Links carry secrets: a signed token in /unsubscribe/, /confirm/ and /preferences/ paths,
a private archive's ``?key=``, a token in any query string. :class:`RedactTokens` rewrites
each to ``…`` in every record before it is written (uvicorn's access log, our own lines
naming a path, the inbound server's unsubscribe+TOKEN@ addresses), in both formats, so a
log file or a log pipeline never holds a working link.
"""

from __future__ import annotations

import logging
import re
import sys
from urllib.parse import unquote

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


REDACTED = "\u2026"  # …
#: The path segment after a route whose segment is a signed token (with the web app's root path before it).
_TOKEN_PATH = re.compile(r"(/(?:unsubscribe|confirm|preferences)/)[^/?#\s\"']+")
#: A tracked send's click and open links end in ``<delivery>.<signature>``: who read it, in the log otherwise.
_TRACKING_PATH = re.compile(r"(/t/(?:c/\d+/\d+|o/\d+)/)[^/?#\s\"']+")
#: Query parameters that carry a secret: the archive's key, API and access tokens, signatures.
_SECRET_QUERY = re.compile(
    r"([?&;](?:key|token|access_token|api_key|apikey|auth|secret|signature|sig|password|code)=)[^&;#\s\"']*",
    re.IGNORECASE,
)
#: A signed link token anywhere (subscriber tokens start "v1."; see subscribers.tokens).
_LINK_TOKEN = re.compile(r"\bv1\.\d+\.\d+\.\d+\.[A-Za-z0-9_-]+=*")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def redact(text: str) -> str:
    """``text`` with every link token and secret query value replaced by ``…``.

    A client may percent-encode its link (``/unsubscribe%2Fv1...``, ``?k%65y=``) and still be
    served: when the decoded text holds something to redact, the decoded text is logged,
    redacted, with control characters escaped (no line breaks smuggled into a log).
    """
    if "%" in text:
        decoded = unquote(text)
        if decoded != text and (redacted := _redact(decoded)) != decoded:
            return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", redacted)
    return _redact(text)


def _redact(text: str) -> str:
    if "/" not in text and "=" not in text and "v1." not in text:
        return text
    text = _TOKEN_PATH.sub(rf"\1{REDACTED}", text)
    text = _TRACKING_PATH.sub(rf"\1{REDACTED}", text)
    text = _SECRET_QUERY.sub(rf"\1{REDACTED}", text)
    return _LINK_TOKEN.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    """Rewrites the message and its string arguments of every record with :func:`redact`.

    On the handler, it sees every logger's records: uvicorn's access line is
    ``'%s - "%s %s HTTP/%s" %d'`` with the path and query as its third argument.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


class UntrackedAccess(logging.Filter):
    """Drops uvicorn's access line for a tracked send's click and open links (``/t/c/``, ``/t/o/``).

    A line per click would keep, for every reader, when they read (and the redacted path still
    names the send and link): the counts are the record. Logging them also cost the redirect a
    quarter of its requests a second.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and isinstance(args[2], str):
            return "/t/c/" not in args[2] and "/t/o/" not in args[2]
        return True


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    return logging.Formatter(TEXT_FORMAT)


def configure(fmt: str, level: str | int = "INFO") -> None:
    """Send every record (ours, Celery's, uvicorn's) to stderr in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.worker", "celery.beat"):
        child = logging.getLogger(name)
        child.handlers[:] = []
        child.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, UntrackedAccess) for f in access.filters):
        access.addFilter(UntrackedAccess())
