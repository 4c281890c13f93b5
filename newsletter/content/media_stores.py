"""Where the media library's files live: a folder on local disk, or a bucket of an S3-compatible store.

Both keep each file under the name the library gives it (``<sha256>.<ext>``, see newsletter.content.media),
never a name from a client, and both are behind :class:`MediaStore`, which the library, the web app
and the CLI use; the runtime picks one from the settings (NEWSLETTER_MEDIA_S3_BUCKET set: S3).

* :class:`LocalMediaStore`: ``$NEWSLETTER_VAR_DIR/media/ab/abcdef….png`` (the first two characters of
  the hash make a sub-folder, so no folder grows past a few thousand files). A file is written under
  a temporary name and renamed into place, so a reader never sees half of one.
* :class:`S3MediaStore`: boto3, credentials and region from the usual AWS environment
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, or an instance role),
  an optional endpoint for other S3-compatible stores (MinIO, Ceph, R2 ...). The bucket stays
  private: the web app reads each file and serves it from its own URL (see newsletter.http.site.media).

A store that cannot be reached raises :class:`MediaStoreUnavailable` (the web answers 503).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from newsletter.errors import NewsletterError

CHUNK = 64 * 1024


class MediaStoreUnavailable(NewsletterError):
    """The store could not be reached or refused the request; the message says which store and why."""


@dataclass
class Blob:
    """A stored file opened for reading: its size and its bytes in chunks (``close`` when they are not read);
    ``path`` when it is a local file."""

    size: int
    chunks: Iterator[bytes]
    path: Path | None = None
    close: Callable[[], None] = lambda: None


class MediaStore(Protocol):
    """Keeps the library's files by name."""

    @property
    def where(self) -> str:
        """The store as a person would name it, for messages: a folder, or ``s3://bucket/prefix``."""
        ...

    def put(self, name: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``name`` (replacing a file of that name: the same content, by its hash)."""
        ...

    def open(self, name: str) -> Blob | None:
        """The file ``name``, or None when there is none."""
        ...

    def delete(self, name: str) -> None:
        """Remove the file ``name``; nothing happens when there is none."""
        ...


class LocalMediaStore:
    """Files in a folder on this machine (by default ``$NEWSLETTER_VAR_DIR/media``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def where(self) -> str:
        return str(self.folder)

    def path(self, name: str) -> Path:
        return self.folder / name[:2] / name

    def put(self, name: str, data: bytes, content_type: str) -> None:
        target = self.path(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            spare = target.with_name(f".{name}.{secrets.token_hex(6)}.part")
            fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(spare, target)
            finally:
                spare.unlink(missing_ok=True)
        except OSError as exc:
            raise MediaStoreUnavailable(f"could not write {target}: {exc.strerror or exc}") from None

    def open(self, name: str) -> Blob | None:
        path = self.path(name)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return Blob(size=size, chunks=_file_chunks(path), path=path)

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink(missing_ok=True)
        except OSError as exc:
            raise MediaStoreUnavailable(f"could not delete {self.path(name)}: {exc.strerror or exc}") from None


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class S3MediaStore:
    """Objects in an S3 bucket (or an S3-compatible store at ``endpoint``), under ``prefix``."""

    def __init__(self, bucket: str, *, endpoint: str | None = None, prefix: str = "") -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.prefix = prefix
        self._client: Any = None

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}" if self.endpoint else "")

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
            self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def put(self, name: str, data: bytes, content_type: str) -> None:
        with self._errors("store", name):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(name),
                Body=data,
                ContentType=content_type,
                CacheControl="public, max-age=31536000, immutable",
            )

    def open(self, name: str) -> Blob | None:
        from botocore.exceptions import ClientError

        with self._errors("read", name):
            try:
                found = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
        body = found["Body"]
        return Blob(size=int(found["ContentLength"]), chunks=_body_chunks(body), close=body.close)

    def delete(self, name: str) -> None:
        with self._errors("delete", name):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def _errors(self, doing: str, name: str) -> _S3Errors:
        return _S3Errors(f"could not {doing} {name} in {self.where}")


class _S3Errors:
    """botocore's errors (no credentials, the endpoint down, access denied ...) as MediaStoreUnavailable."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, (BotoCoreError, ClientError)):
            raise MediaStoreUnavailable(f"{self.what}: {exc}") from None


def _body_chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()
