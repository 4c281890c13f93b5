"""Receiving a request body without holding it: an upload (a CSV import, an image) written to disk as it arrives.

``receive_upload`` parses a ``multipart/form-data`` body a chunk at a time (python-multipart's
streaming parser): the file's bytes go straight to a file under ``$NEWSLETTER_VAR_DIR/imports``
(``subscribers.import_jobs.new_upload_path``; an image: ``newsletter.content.media.new_upload_path``) and only the small form fields (at most 64 KB
each) are kept in memory. It replaces FastAPI's ``File()``/``Form()`` for the CSV imports and the media library:
those spool the file to the system's temporary folder first and take no overall limit. The
request's total size is capped before this by newsletter.http.body_limits.

``read_body`` reads a small body whole, refusing it (413) past a limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from newsletter.errors import InvalidInput
from newsletter.http.errors import BodyTooLarge, size_text

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD_LIMIT = 64 * 1024  # each form field beside the file (list, confirmed, csrf_token)
MAX_PARTS = 20


@dataclass
class Upload:
    """The form's fields (the last value of each name), and its one file as saved on disk, if it had one."""

    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str | None = None
    size: int = 0

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The whole body, for a handler that needs it whole; BodyTooLarge (413, "the limit for ``what``") past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, what)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_upload(
    request: Request,
    *,
    new_path: Callable[[], Path],
    max_bytes: int,
    file_field: str = "file",
    before_file: Callable[[dict[str, str]], None] | None = None,
    what: str = "a CSV import",
) -> Upload:
    """The form of ``request`` with its file (the part named ``file_field``) saved at ``new_path()`` as it arrives.

    ``before_file`` sees the fields sent before the file and may refuse (raise) before a byte
    of it is written. A urlencoded form gives its fields and no file; another body is not read.
    Raises BodyTooLarge (413, "the limit for ``what``") past ``max_bytes`` of file, InvalidInput (where "body") for a malformed
    form; the file is removed on any error and is the caller's otherwise (Upload.discard).
    """
    media, options = parse_options_header(request.headers.get("content-type", ""))
    if media == b"application/x-www-form-urlencoded":
        text = (await read_body(request, FIELD_LIMIT * 4, "a form")).decode("utf-8", "replace")
        return Upload(fields=dict(parse_qsl(text, keep_blank_values=True)))
    if media != b"multipart/form-data":
        return Upload()
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("the multipart/form-data body has no boundary in its Content-Type", where="body")
    parts = _Parts(file_field, new_path, max_bytes, before_file, what)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
            await parts.flush()
        parser.finalize()
        await parts.flush()
        if not parts.ended:
            raise InvalidInput("the multipart/form-data body ends before its closing boundary", where="body")
    except BaseException as exc:
        parts.close()
        parts.upload.discard()
        if isinstance(exc, FormParserError):
            raise InvalidInput(f"not a valid multipart/form-data body ({exc})", where="body") from None
        raise
    parts.close()
    return parts.upload


class _Parts:
    """python-multipart's callbacks: fields into memory, the file onto disk (written by ``flush``, in a thread)."""

    def __init__(
        self,
        file_field: str,
        new_path: Callable[[], Path],
        max_bytes: int,
        before_file: Callable[[dict[str, str]], None] | None,
        what: str,
    ) -> None:
        self.what = what
        self.file_field = file_field
        self.new_path = new_path
        self.max_bytes = max_bytes
        self.before_file = before_file
        self.upload = Upload()
        self.out: BinaryIO | None = None
        self.pending: list[bytes] = []
        self.count = 0
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._in_file = False
        self._data = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise InvalidInput(f"the form has more than {MAX_PARTS} parts", where="body")
        self._disposition = b""
        self._in_file = False
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidInput(
                "a part of the form has no name (Content-Disposition: form-data; name=...)", where="body"
            )
        self._name = options[b"name"].decode("utf-8", "replace")
        if self._name != self.file_field:
            return
        if self.upload.path is not None:
            raise InvalidInput("send one file", where=self.file_field)
        if self.before_file is not None:
            self.before_file(dict(self.upload.fields))
        self.upload.filename = options.get(b"filename", b"").decode("utf-8", "replace") or None
        self.upload.path = self.new_path()
        self.out = open(self.upload.path, "xb")
        self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._in_file:
            self.upload.size += len(chunk)
            if self.upload.size > self.max_bytes:
                raise BodyTooLarge(self.max_bytes, self.what)
            self.pending.append(bytes(chunk))
            return
        if len(self._data) + len(chunk) > FIELD_LIMIT:
            raise InvalidInput(f"the field is longer than {size_text(FIELD_LIMIT)}", where=self._name)
        self._data += chunk

    def on_part_end(self) -> None:
        if not self._in_file:
            self.upload.fields[self._name] = self._data.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    async def flush(self) -> None:
        if self.pending and self.out is not None:
            data = b"".join(self.pending)
            self.pending.clear()
            await run_in_threadpool(self.out.write, data)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
