"""The media library over HTTP: /api/media and /media/<hash>.<ext>, on SQLite and PostgreSQL.

The real app (FastAPI's TestClient, as the other API tests) on a real database and the local
store under a temporary NEWSLETTER_VAR_DIR; images made with Pillow, uploaded as multipart forms.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.apikit import (
    Api,
    api,  # noqa: F401  (fixture)
    api_with_broker,  # noqa: F401  (fixture)
    assert_error,
)

BASE = "https://news.example.org"


def png(width: int = 640, height: int = 480, colour: tuple[int, int, int] = (30, 140, 220)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 640, height: int = 480) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


def upload(client: Api, name: str, data: bytes, *, role: str = "admin", content_type: str = "image/png"):
    return client.post("/api/media", role=role, files={"file": (name, data, content_type)})


def stored_files(client: Api) -> list[str]:
    folder = client.settings.var_dir / "media"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def issue_md(subject: str, body: str) -> str:
    return f'---\nsubject: "{subject}"\n---\n{body}\n'


def test_upload_list_and_serve_an_image(api: Api):  # noqa: F811
    answer = upload(api, "Team photo.png", png(), role="editor")
    assert answer.status_code == 201, answer.text
    item: dict[str, Any] = answer.json()
    name = item["name"]
    assert name.endswith(".png") and len(name) == 64 + 4 and "Team" not in name
    assert item["filename"] == "Team photo.png" and item["uploader"] == "token test-editor"
    assert (item["width"], item["height"], item["content_type"]) == (640, 480, "image/png")
    assert item["url"] == f"{BASE}/media/{name}"
    assert item["markdown"] == f"![Team photo]({BASE}/media/{name})"
    assert stored_files(api) == [name]

    # The same image again is the same item (200), and nothing more is stored.
    again = upload(api, "copy.png", png())
    assert again.status_code == 200 and again.json()["id"] == item["id"]
    assert stored_files(api) == [name]

    listed = api.get("/api/media", expect=200).json()
    assert listed["total"] == 1 and [i["name"] for i in listed["items"]] == [name]
    assert api.get(f"/api/media/{item['id']}", expect=200).json() == item

    served = api.client.get(f"/media/{name}")
    assert (
        served.status_code == 200 and served.content == (api.settings.var_dir / "media" / name[:2] / name).read_bytes()
    )
    assert served.headers["content-type"] == "image/png"
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["etag"] == f'"{name[:64]}"'
    assert int(served.headers["content-length"]) == item["bytes"]
    head = api.client.head(f"/media/{name}")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(item["bytes"])
    revalidated = api.client.get(f"/media/{name}", headers={"If-None-Match": served.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""
    assert revalidated.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_the_type_is_told_by_content_not_by_name_or_content_type(api: Api):  # noqa: F811
    refused = upload(api, "cat.png", b"I am a text file, not a cat.\n" * 20, content_type="image/png")
    assert_error(refused, 400, field="cat.png", says="not an image")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert_error(upload(api, "logo.svg", svg, content_type="image/svg+xml"), 400, field="logo.svg")
    assert stored_files(api) == [] and api.get("/api/media").json()["total"] == 0

    disguised = upload(api, "holiday.png", jpeg(), content_type="image/png")
    assert disguised.status_code == 201, disguised.text
    item = disguised.json()
    assert item["content_type"] == "image/jpeg" and item["name"].endswith(".jpg")
    assert item["filename"] == "holiday.png"  # shown as uploaded, stored as what it is
    served = api.client.get(f"/media/{item['name']}")
    assert served.headers["content-type"] == "image/jpeg" and served.content[:3] == b"\xff\xd8\xff"
    # Nothing leaves the pattern the library makes, whatever is asked.
    for wrong in (item["name"].replace(".jpg", ".png"), "secret_key", "..%2Fsecret_key", item["name"][:64]):
        assert api.client.get(f"/media/{wrong}").status_code == 404, wrong


def test_a_wide_upload_is_scaled_to_email_width(api: Api):  # noqa: F811
    item = upload(api, "banner.png", png(3000, 600)).json()
    assert (item["width"], item["height"]) == (1200, 240)
    served = Image.open(io.BytesIO(api.client.get(f"/media/{item['name']}").content))
    assert served.size == (1200, 240) and served.format == "PNG"


def test_upload_problems_are_named(api: Api):  # noqa: F811
    assert_error(api.post("/api/media", data={"note": "no file"}), 422, field="file")
    assert_error(api.post("/api/media", files={"other": ("a.png", png())}), 422, field="file")
    assert_error(api.delete("/api/media/99"), 404)
    assert_error(api.client.post("/api/media", files={"file": ("a.png", png())}), 401)


def test_deleting_an_image_used_by_a_sent_issue_is_refused_naming_the_issue(api_with_broker: Api):  # noqa: F811
    api = api_with_broker  # noqa: F811
    api.make_list()
    api.make_subscriber("ann@example.com")
    kept = upload(api, "chart.png", png()).json()
    also = upload(api, "frozen.png", png(colour=(1, 2, 3))).json()
    loose = upload(api, "draft-only.png", png(colour=(9, 9, 9))).json()
    unused = upload(api, "unused.png", png(colour=(250, 250, 250))).json()

    sent = api.make_issue(markdown=issue_md("Charts", f"Look:\n\n{kept['markdown']}\n\n{also['markdown']}"))
    api.post("/api/sends", json={"issue_id": sent["id"]}, expect=201)
    # Its Markdown loses one image after the send: the mail that went out still shows it (the frozen HTML).
    api.put(f"/api/issues/{sent['id']}/markdown", json={"markdown": issue_md("Charts", kept["markdown"])}, expect=200)
    draft = api.make_issue(markdown=issue_md("Next week", f"Soon:\n\n{loose['markdown']}\n\n{kept['markdown']}"))

    for item in (kept, also):
        refused = assert_error(api.delete(f"/api/media/{item['id']}", role="editor"), 409)
        assert f'issue {sent["id"]} "Charts"' in refused["message"] and item["name"] in refused["message"]
        assert f"issue {draft['id']}" not in refused["message"]  # a draft does not keep it
        assert api.client.get(f"/media/{item['name']}").status_code == 200  # still there, still listed
    assert api.get("/api/media").json()["total"] == 4

    gone = api.delete(f"/api/media/{loose['id']}", expect=200).json()
    assert gone["deleted"]["name"] == loose["name"]
    assert gone["drafts"] == [{"id": draft["id"], "subject": "Next week"}]
    assert api.delete(f"/api/media/{unused['id']}", expect=200).json()["drafts"] == []
    for item in (loose, unused):
        assert api.client.get(f"/media/{item['name']}").status_code == 404
        assert_error(api.get(f"/api/media/{item['id']}"), 404)
    assert sorted(stored_files(api)) == sorted([kept["name"], also["name"]])
