"""Image uploads against a real `newsletter web` process: the size limit before the body is read, and the
admin library's form (session cookie, CSRF token, a multipart body as a browser sends it).

Raw sockets declare or stream bodies larger than the limit (NEWSLETTER_MEDIA_MAX_MB=1 here); see
tests/test_request_limits.py for the same checks on the other routes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.test_request_limits import (
    BOUNDARY,
    MB,
    Server,
    error_of,
    read_response,
    start_server,
    stream_until_answered,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running, _ = start_server(tmp_path_factory.mktemp("media"), NEWSLETTER_MEDIA_MAX_MB="1")
    yield running
    running.web.stop()


def png(width: int = 300, height: int = 200) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 160, 90)).save(out, "PNG")
    return out.getvalue()


def media_files(server: Server, folder: str = "media") -> list[str]:
    root = server.var / folder
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def image_head(filename: str, fields: dict[str, str] | None = None) -> bytes:
    parts = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in (fields or {}).items()
    )
    return (
        parts + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()


def test_an_image_declared_larger_than_the_limit_gets_413_before_a_byte_is_read(server):
    with server.connect(
        f"POST /api/media HTTP/1.1\r\nAuthorization: Bearer {server.editor_token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {50 * MB}"
    ) as sock:
        status, _, body = read_response(sock)  # nothing of the body was sent
    assert status == 413
    assert error_of(body)["message"] == "the request body is larger than 1 MB, the limit for an image upload"


def test_an_image_streamed_past_the_limit_is_refused_as_it_passes_it_and_nothing_is_kept(server):
    head = image_head("huge.png") + png()
    with server.connect(
        f"POST /api/media HTTP/1.1\r\nAuthorization: Bearer {server.token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked"
    ) as sock:
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        sent = stream_until_answered(sock, 64 * MB, b"\0" * 65536, chunked=True)
        status, _, body = read_response(sock)
    assert status == 413 and sent < 8 * MB  # answered long before the 64 MB were sent
    assert "the limit for an image upload" in str(error_of(body)["message"])
    # The 413 goes out as the limit is passed; the part written so far is removed right after.
    assert wait_for(lambda: media_files(server, "media-incoming") == [] or None, "the partial upload removed")
    assert media_files(server) == []
    # Within the limit, the same route takes it.
    fine = httpx.post(f"{server.base}/api/media", headers=server.auth(), files={"file": ("ok.png", png())})
    assert fine.status_code == 201, fine.text
    assert media_files(server) == [fine.json()["name"]]
    assert httpx.delete(f"{server.base}/api/media/{fine.json()['id']}", headers=server.auth()).status_code == 200


def test_the_admin_library_form_uploads_lists_and_deletes(server):
    cookies = server.admin_cookies()
    client = httpx.Client(base_url=server.base, cookies=cookies, follow_redirects=False)
    with client:
        # Without the CSRF token: refused before the file is read, and nothing is stored.
        refused = client.post("/admin/media", files={"file": ("a.png", png())})
        assert refused.status_code == 403 and media_files(server) == []
        # The plain form (no script): the hidden field first, then the file; back to the library with a notice.
        posted = client.post(
            "/admin/media", data={"csrf_token": server.csrf}, files={"file": ("Garden party.png", png(), "image/png")}
        )
        assert posted.status_code == 303 and posted.headers["location"] == "/admin/media?done=media-uploaded"
        [name] = media_files(server)
        page = client.get("/admin/media?done=media-uploaded")
        assert page.status_code == 200 and "Uploaded: the image is in the library." in page.text
        assert f'src="/media/{name}"' in page.text and "Garden party.png" in page.text
        assert f"![Garden party]({server.base}/media/{name})" in page.text
        assert client.get(f"/media/{name}").headers["content-type"] == "image/png"  # img-src 'self' serves it
        # The script's way: the token in a header, JSON back; not an image: 400 naming the file.
        headers = {"X-CSRF-Token": server.csrf, "Accept": "application/json"}
        bad = client.post("/admin/media", headers=headers, files={"file": ("notes.png", b"plain text\n")})
        assert bad.status_code == 400 and "notes.png: not an image" in bad.json()["error"]["message"]
        big = client.post("/admin/media", headers=headers, files={"file": ("big.png", b"\0" * (2 * MB))})
        assert big.status_code == 413 and "image upload" in big.text
        same = client.post("/admin/media", headers=headers, files={"file": ("again.png", png())})
        assert same.status_code == 200 and json.loads(same.text)["created"] is False
        assert json.loads(same.text)["markdown"] == f"![Garden party]({server.base}/media/{name})"
        # Deleting: the form's POST with its token.
        item_id = same.json()["id"]
        assert client.post(f"/admin/media/{item_id}/delete").status_code == 403  # no token
        gone = client.post(f"/admin/media/{item_id}/delete", data={"csrf_token": server.csrf})
        assert gone.status_code == 303 and gone.headers["location"] == "/admin/media?done=media-deleted"
        assert media_files(server) == [] and client.get(f"/media/{name}").status_code == 404
        assert media_files(server, "media-incoming") == []


def test_the_library_page_refuses_to_delete_an_image_a_sent_issue_shows(server):
    client = httpx.Client(base_url=server.base, cookies=server.admin_cookies(), follow_redirects=False)
    with client:
        headers = {"X-CSRF-Token": server.csrf, "Accept": "application/json"}
        item = client.post("/admin/media", headers=headers, files={"file": ("map.png", png(500, 500))}).json()
        reader = {"list": "weekly", "email": "ann@example.org", "confirmed": True}
        assert httpx.post(f"{server.base}/api/subscribers", headers=server.auth(), json=reader).status_code == 201
        issue = httpx.post(
            f"{server.base}/api/issues/markdown",
            headers=server.auth(),
            json={"list": "weekly", "markdown": f'---\nsubject: "Maps"\n---\nHere:\n\n{item["markdown"]}\n'},
        ).json()
        scheduled = httpx.post(
            f"{server.base}/api/sends",
            headers=server.auth(),
            json={"issue_id": issue["id"], "at": "2099-01-04T08:00:00+00:00"},
        )
        assert scheduled.status_code == 201, scheduled.text
        refused = client.post(f"/admin/media/{item['id']}/delete", data={"csrf_token": server.csrf})
        assert refused.status_code == 409
        assert f"in use by a sent issue and cannot be deleted: issue {issue['id']} &#34;Maps&#34;" in refused.text
        assert f'id="media-{item["id"]}"' in refused.text  # still listed
        assert client.get(f"/media/{item['name']}").status_code == 200
