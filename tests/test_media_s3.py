"""The media library on an S3-compatible store: moto's standalone server, a real HTTP server on a free port,
behind a real `newsletter web` process and the CLI (NEWSLETTER_MEDIA_S3_BUCKET, _ENDPOINT, _PREFIX,
credentials in the usual AWS_* variables).

Skips with a one-line reason without moto's server (the test extra installs it); fails under CI=true.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from newsletter.access import accounts
from newsletter.store import db
from tests.conftest import SYSTEM_REDIS, Cli, clean_environ, need_service
from tests.test_web_journey import WebProcess, free_port, start_web

pytestmark = [pytest.mark.slow, pytest.mark.redis]

BUCKET = "newsletter-media"
PREFIX = "issues/media/"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """moto's S3 server on a free port of this machine, with the bucket made; stopped after the test."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        need_service("moto's server is not installed (pip install 'moto[server]', in the test extra)")
    port = free_port()
    log = tmp_path / "moto.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env={**clean_environ(), **AWS},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto's server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def s3_client(endpoint: str):
    import boto3

    return boto3.session.Session(
        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=endpoint)


@dataclass
class Site:
    web: WebProcess
    cli: Cli
    token: str
    var: Path
    endpoint: str

    def keys(self) -> list[str]:
        found = s3_client(self.endpoint).list_objects_v2(Bucket=BUCKET).get("Contents", [])
        return sorted(o["Key"] for o in found)


@pytest.fixture
def site(tmp_path: Path, s3_endpoint: str) -> Iterator[Site]:
    port = free_port()
    env = clean_environ(
        NEWSLETTER_VAR_DIR=str(tmp_path / "var"),
        NEWSLETTER_BROKER_URL=SYSTEM_REDIS,
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}",
        NEWSLETTER_MEDIA_S3_BUCKET=BUCKET,
        NEWSLETTER_MEDIA_S3_ENDPOINT=s3_endpoint,
        NEWSLETTER_MEDIA_S3_PREFIX=PREFIX,
        **AWS,
    )
    cli = Cli(env=env, cwd=tmp_path)
    cli("db", "upgrade")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'var' / 'newsletter.db'}")
    with db.transaction(db.session_factory(engine)) as session:
        _, token = accounts.create_token(session, "media-editor", "editor")
    engine.dispose()
    web = start_web(env, tmp_path, port)
    try:
        yield Site(web, cli, token, tmp_path / "var", s3_endpoint)
    finally:
        web.stop()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 60, 200)).save(out, "JPEG")
    return out.getvalue()


def test_images_go_to_the_bucket_and_are_served_from_the_apps_own_url(site: Site):
    auth = {"Authorization": f"Bearer {site.token}"}
    answer = httpx.post(
        f"{site.web.base}/api/media", headers=auth, files={"file": ("poster.jpeg", jpeg(2400, 1200))}, timeout=60
    )
    assert answer.status_code == 201, answer.text
    item = answer.json()
    name = item["name"]
    assert (item["width"], item["height"]) == (1200, 600)
    assert site.keys() == [f"{PREFIX}{name}"]
    assert not (site.var / "media").exists()  # nothing on local disk but the emptied upload folder
    assert list((site.var / "media-incoming").iterdir()) == []
    stored = s3_client(site.endpoint).get_object(Bucket=BUCKET, Key=f"{PREFIX}{name}")
    assert stored["ContentType"] == "image/jpeg"

    # Served by the app (a proxy: the bucket need not be public), with the library's own headers.
    served = httpx.get(item["url"])
    assert served.status_code == 200 and served.content == stored["Body"].read()
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(item["url"], headers={"If-None-Match": served.headers["etag"]}).status_code == 304
    assert httpx.head(item["url"]).headers["content-length"] == str(len(served.content))

    # The CLI uses the same store; deleting removes the object and the URL stops answering.
    added = site.cli("media", "add", "--json", str(_write(site.var.parent / "small.jpg", jpeg(300, 200))))
    assert '"created": true' in added.stdout
    assert len(site.keys()) == 2
    site.cli("media", "rm", name)
    assert len(site.keys()) == 1 and f"{PREFIX}{name}" not in site.keys()
    assert httpx.get(item["url"]).status_code == 404


def test_a_store_that_refuses_is_a_503_and_nothing_is_listed(site: Site):
    auth = {"Authorization": f"Bearer {site.token}"}
    s3_client(site.endpoint).delete_bucket(Bucket=BUCKET)  # the store answers, but refuses every write
    answer = httpx.post(f"{site.web.base}/api/media", headers=auth, files={"file": ("a.jpg", jpeg(40, 40))})
    assert answer.status_code == 503, answer.text
    assert f"s3://{BUCKET}/{PREFIX}" in answer.json()["error"]["message"]
    assert httpx.get(f"{site.web.base}/api/media", headers=auth).json()["total"] == 0
    refused = site.cli("media", "add", str(_write(site.var.parent / "b.jpg", jpeg(40, 40))), check=False)
    assert refused.returncode == 1 and "could not store" in refused.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
