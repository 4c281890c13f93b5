"""Bounded requests before any work (issue 16, item 1), against a real `newsletter web` process.

The client is a raw socket (or httpx), so a body can be declared larger than it is, sent in
chunks with no length at all, or streamed while the answer is read. The server's memory is its
process's VmRSS, read from /proc. Every body limit and the check of who is asking happen before
the app reads the body: newsletter/web/body_limits.py.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from newsletter.access import accounts
from newsletter.store import db
from tests.conftest import SYSTEM_REDIS, Cli, clean_environ
from tests.test_web_journey import WebProcess, free_port, start_web

pytestmark = [pytest.mark.slow]

KEY = "request-limits-secret-key-0123456789abcdef"
TOPIC = "arn:aws:sns:us-east-1:123456789012:newsletter-ses"
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef"
MB = 1024 * 1024
GIGABYTE = 1 << 30


@dataclass
class Server:
    web: WebProcess
    port: int
    var: Path
    token: str
    editor_token: str
    session_id: str
    csrf: str

    @property
    def base(self) -> str:
        return self.web.base

    def rss(self) -> int:
        """The web process's resident memory, in bytes."""
        for line in Path(f"/proc/{self.web.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def admin_cookies(self) -> dict[str, str]:
        return {"newsletter_admin": self.session_id}

    def connect(self, head: str) -> socket.socket:
        """A connection that has sent ``head`` (request line and headers, without the blank line) and nothing more."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        sock.sendall(f"{head}\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return sock


def start_server(tmp: Path, **settings: str) -> tuple[Server, Cli]:
    port = free_port()
    env = clean_environ(
        NEWSLETTER_VAR_DIR=str(tmp / "var"),
        NEWSLETTER_SECRET_KEY=KEY,
        NEWSLETTER_BROKER_URL=SYSTEM_REDIS,
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}",
        NEWSLETTER_SES_TOPIC_ARNS=TOPIC,
        NEWSLETTER_WEBHOOK_SECRET=WEBHOOK_SECRET,
        **settings,
    )
    cli = Cli(env=env, cwd=tmp)
    cli("db", "upgrade")
    cli("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    engine = db.make_engine(f"sqlite:///{tmp / 'var' / 'newsletter.db'}")
    try:
        with db.transaction(db.session_factory(engine)) as session:
            _, token = accounts.create_token(session, "limits-admin", "admin")
            _, editor_token = accounts.create_token(session, "limits-editor", "editor")
            accounts.create_user(session, "ada", "a long enough password", "admin")
            session_id, caller = accounts.log_in(session, "ada", "a long enough password")
    finally:
        engine.dispose()
    web = start_web(env, tmp, port)
    assert caller.csrf_token
    return Server(web, port, tmp / "var", token, editor_token, session_id, caller.csrf_token), cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running, _ = start_server(tmp_path_factory.mktemp("limits"))
    yield running
    running.web.stop()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the answer on ``sock`` (a Content-Length body, as this app sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the server closed the connection without an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def stream_until_answered(sock: socket.socket, total: int, piece: bytes, *, chunked: bool = False) -> int:
    """Send up to ``total`` bytes of body in ``piece``s, stopping once the server answers; the bytes sent then."""
    sent = 0
    try:
        while sent < total and not answered(sock):
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            sent += len(piece)
        if sent >= total and chunked and not answered(sock):
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: read its answer
    return sent


def error_of(body: bytes) -> dict[str, object]:
    document = json.loads(body)
    assert set(document) == {"error"}, document
    return document["error"]


# --- the admin API -------------------------------------------------------------------------------


def test_an_unauthenticated_gigabyte_to_the_api_gets_401_at_once_and_the_server_grows_by_less_than_50_mb(server):
    # Warm up what the first requests load (the token check, the error handlers) before measuring.
    assert httpx.post(f"{server.base}/api/issues", json={}).status_code == 401
    assert httpx.get(f"{server.base}/api/lists", headers=server.auth()).status_code == 200
    before = peak = server.rss()
    sock = server.connect(f"POST /api/issues HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {GIGABYTE}")
    piece = b'{"list": "weekly", "subject": "x", "body_markdown": "' + b"x" * (MB - 52)
    sent, answered_after = 0, None
    with sock:
        try:
            while sent < GIGABYTE and peak - before < 50 * MB:  # on a server that buffers, stop before it hurts
                if answered_after is None and answered(sock):
                    answered_after = sent
                    status, headers, body = read_response(sock)
                sock.sendall(piece)  # and keep streaming the whole gigabyte: the server must not keep it
                sent += len(piece)
                if sent % (16 * MB) < len(piece):
                    peak = max(peak, server.rss())
        except (BrokenPipeError, ConnectionResetError):
            pass
        peak = max(peak, server.rss())
        assert answered_after is not None, (
            f"no answer after {sent // MB} MB of the body; the server grew by {(peak - before) // MB} MB"
        )
    assert answered_after < 64 * MB, f"the 401 came only after {answered_after // MB} MB of the body"
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in str(error_of(body)["message"])
    assert peak - before < 50 * MB, f"the web process grew by {(peak - before) / MB:.0f} MB"


def test_malformed_json_without_a_token_is_401_not_422(server):
    for headers in ({}, {"Authorization": "Bearer nl_not-a-token"}):
        answer = httpx.post(
            f"{server.base}/api/issues",
            content=b'{"list": "weekly", "subj',
            headers={"Content-Type": "application/json", **headers},
        )
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
    # With a token the same body is a 422 naming the body and where the JSON breaks.
    answer = httpx.post(
        f"{server.base}/api/issues",
        content=b'{"list": "weekly", "subj',
        headers={"Content-Type": "application/json", **server.auth()},
    )
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "body", answer.text
    assert "not valid JSON" in answer.json()["error"]["message"]


def test_an_authenticated_body_over_2_mb_is_413_naming_the_limit(server):
    limit = "the request body is larger than 2 MB, the limit for the admin API"
    three_mb = {"list": "weekly", "subject": "Big", "body_markdown": "x" * (3 * MB)}
    answer = httpx.post(f"{server.base}/api/issues", json=three_mb, headers=server.auth(), timeout=60)
    assert answer.status_code == 413, answer.text
    assert answer.json() == {"error": {"status": 413, "message": limit, "field": None}}

    # Declared: refused before a byte of it is sent.
    with server.connect(
        f"POST /api/issues HTTP/1.1\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {3 * MB}"
    ) as sock:
        status, _, body = read_response(sock)
    assert status == 413 and error_of(body)["message"] == limit

    # Chunked, with no length to trust: counted as it comes, refused once past 2 MB.
    with server.connect(
        f"POST /api/issues HTTP/1.1\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked"
    ) as sock:
        sent = stream_until_answered(sock, 64 * MB, b'{"body_markdown": "' + b"y" * (256 * 1024), chunked=True)
        status, _, body = read_response(sock)
    assert status == 413 and error_of(body)["message"] == limit
    assert sent < 64 * MB, "the server read the whole chunked body before answering"

    # Under the limit the API works as before.
    small = httpx.post(f"{server.base}/api/issues", json={**three_mb, "body_markdown": "Hello."}, headers=server.auth())
    assert small.status_code == 201, small.text


# --- webhooks ------------------------------------------------------------------------------------


def test_the_ses_webhook_refuses_an_over_limit_body_by_its_length_and_by_counting_a_chunked_one(server):
    limit = "the request body is larger than 1 MB, the limit for a webhook"
    head = (
        "POST /webhooks/ses HTTP/1.1\r\nContent-Type: text/plain; charset=UTF-8\r\nx-amz-sns-message-type: Notification"
    )
    with server.connect(f"{head}\r\nContent-Length: {100 * MB}") as sock:  # nothing of it sent
        status, _, body = read_response(sock)
    assert status == 413 and error_of(body)["message"] == limit
    with server.connect(f"{head}\r\nTransfer-Encoding: chunked") as sock:
        sent = stream_until_answered(
            sock, 64 * MB, b'{"Type": "Notification", "Message": "' + b"z" * 65536, chunked=True
        )
        status, _, body = read_response(sock)
    assert status == 413 and error_of(body)["message"] == limit
    assert sent < 64 * MB
    # A small body is read and judged as before (not signed: refused, but not for its size).
    small = httpx.post(f"{server.base}/webhooks/ses", content=b'{"Type": "Notification"}')
    assert small.status_code in (400, 403), small.text


def test_the_events_webhook_checks_its_secret_before_reading_and_caps_the_body_at_1_mb(server):
    with server.connect(
        f"POST /webhooks/events HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {GIGABYTE}"
    ) as sock:
        status, headers, body = read_response(sock)
    assert status == 401 and headers["www-authenticate"] == "Bearer", body
    events = {
        "events": [{"type": "bounce", "email": f"r{i}@example.com", "bounce_type": "hard"} for i in range(30_000)]
    }
    too_many = httpx.post(
        f"{server.base}/webhooks/events", json=events, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}, timeout=60
    )
    assert too_many.status_code == 413, too_many.text
    assert too_many.json()["error"]["message"] == "the request body is larger than 1 MB, the limit for a webhook"


# --- forms -----------------------------------------------------------------------------------------


def test_a_form_over_64_kb_is_413_naming_the_limit_and_admin_posts_need_a_session_first(server):
    limit = "The request body is larger than 64 KB, the limit for a form."
    big = {"email": "reader@example.com", "name": "n" * (100 * 1024)}
    for path in ("/subscribe/weekly", "/unsubscribe/not-a-token", "/preferences/not-a-token/name"):
        answer = httpx.post(server.base + path, data=big)
        assert answer.status_code == 413, (path, answer.status_code)
        assert answer.headers["content-type"].startswith("text/html") and limit in answer.text, path

    # An admin form: without a session, sent to the login page before its body is read...
    with server.connect(
        f"POST /admin/lists HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {GIGABYTE}"
    ) as sock:
        status, headers, _ = read_response(sock)
    assert status == 303 and headers["location"] == "/admin/login"
    # ...and with one, capped at 64 KB like the others.
    answer = httpx.post(
        f"{server.base}/admin/lists",
        cookies=server.admin_cookies(),
        data={"csrf_token": server.csrf, "slug": "big", "name": "x" * (100 * 1024)},
    )
    assert answer.status_code == 413 and limit in answer.text
    # The issue editor posts the whole Markdown source: 2 MB there.
    issue = httpx.post(
        f"{server.base}/admin/issues/new",
        cookies=server.admin_cookies(),
        data={
            "csrf_token": server.csrf,
            "list": "weekly",
            "source": "---\nsubject: Long\n---\n" + "word " * 30_000,
        },
    )
    assert issue.status_code == 303, issue.text


# --- CSV imports -----------------------------------------------------------------------------------


BOUNDARY = "limitsboundary7MA4YWxkTrZu0gW"


def multipart_head(fields: dict[str, str], filename: str) -> bytes:
    parts = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    )
    return (
        parts + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()


def csv_rows(start: int, count: int) -> bytes:
    return "".join(
        f"reader{i:07d}@example.com,Reader number {i:07d} of the big import\n" for i in range(start, start + count)
    ).encode()


def emails(start: int, count: int) -> bytes:
    return "".join(f"reader{i:07d}@example.com\n" for i in range(start, start + count)).encode()


def wait_for(condition, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def imports_on_disk(server: Server) -> list[Path]:
    folder = server.var / "imports"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_csv_import_of_several_mb_is_written_to_disk_as_it_arrives_and_imports(server):
    rows = 100_000  # about 6 MB: three times the API's own limit, and past any in-memory buffer
    first, second = csv_rows(0, rows // 2), csv_rows(rows // 2, rows - rows // 2)
    head = multipart_head({"list": "weekly", "confirmed": "true"}, "big.csv") + b"email,name\n"
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(head) + len(first) + len(second) + len(tail)
    assert length > 5 * MB
    with server.connect(
        f"POST /api/imports HTTP/1.1\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}"
    ) as sock:
        sock.sendall(head + first)
        # Half the file is on its way: it is already in a file under var/imports, not in the server's memory.
        saved = wait_for(
            lambda: [p for p in imports_on_disk(server) if p.stat().st_size >= len(first) - MB],
            "half the upload written under var/imports",
        )
        assert len(saved) == 1
        sock.sendall(second + tail)
        status, _, body = read_response(sock)
    assert status == 202, body
    job = json.loads(body)
    assert job["filename"] == "big.csv" and job["size_bytes"] == len(b"email,name\n") + len(first) + len(second)
    done = wait_for(
        lambda: (
            (j := httpx.get(f"{server.base}/api/imports/{job['id']}", headers=server.auth()).json())["status"]
            in ("finished", "failed")
            and j
        ),
        "the import",
    )
    assert (done["status"], done["imported"], done["rejected"]) == ("finished", rows, 0), done
    assert wait_for(lambda: imports_on_disk(server) == [] or None, "the upload removed once imported") is True

    # The admin UI's upload takes the same road (its CSRF field comes before the file).
    answer = httpx.post(
        f"{server.base}/admin/imports",
        cookies=server.admin_cookies(),
        data={"csrf_token": server.csrf, "list": "weekly"},
        files={"file": ("more.csv", b"email\n" + emails(rows, 1000), "text/csv")},
    )
    assert answer.status_code == 303, answer.text


def test_a_csv_import_over_its_own_limit_is_413_and_the_role_is_checked_before_the_upload(tmp_path):
    small, _ = start_server(tmp_path, NEWSLETTER_IMPORT_MAX_MB="3")
    try:
        head = multipart_head({"list": "weekly"}, "huge.csv") + b"email\n"
        # An editor may not import: told so before the upload (declared, never sent) is read.
        with small.connect(
            f"POST /api/imports HTTP/1.1\r\nAuthorization: Bearer {small.editor_token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {2 * MB}"
        ) as sock:
            status, _, body = read_response(sock)
        assert status == 403 and "editor" in str(error_of(body)["message"])
        # More than NEWSLETTER_IMPORT_MAX_MB, chunked: refused as it passes the limit, and nothing is kept.
        with small.connect(
            f"POST /api/imports HTTP/1.1\r\nAuthorization: Bearer {small.token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked"
        ) as sock:
            sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
            sent = stream_until_answered(sock, 64 * MB, csv_rows(0, 4000), chunked=True)
            status, _, body = read_response(sock)
        assert status == 413 and sent < 64 * MB
        assert error_of(body)["message"] == "the request body is larger than 3 MB, the limit for a CSV import"
        assert wait_for(lambda: imports_on_disk(small) == [] or None, "the partial upload removed") is True
        # A file over the API's 2 MB but within the import limit is fine.
        data = b"email\n" + emails(0, 100_000)  # 2.6 MB
        assert 2 * MB < len(data) < 3 * MB
        answer = httpx.post(
            f"{small.base}/api/imports",
            headers=small.auth(),
            data={"list": "weekly"},
            files={"file": ("ok.csv", data, "text/csv")},
            timeout=60,
        )
        assert answer.status_code == 202, answer.text
    finally:
        small.web.stop()
