"""Logging for the long-running processes (worker, scheduler, web, inbound): text or JSON lines.

With NEWSLETTER_LOG_FORMAT=json every record is one JSON object with its time, level,
logger and message, plus the ids it was logged with (``extra={"send_id": ..., "delivery_id": ...}``),
so a log pipeline can follow one send or one delivery across processes.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(
            JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    return logging.Formatter(TEXT_FORMAT)


def configure(fmt: str, level: str | int = "INFO") -> None:
    """Send every record (ours, Celery's, uvicorn's) to stderr in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.worker", "celery.beat"):
        child = logging.getLogger(name)
        child.handlers[:] = []
        child.propagate = True
