"""`newsletter media add | ls | rm` as real processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests.sendkit import SAMPLE_ISSUE


def image(path: Path, size: tuple[int, int] = (1600, 900), kind: str = "PNG") -> Path:
    Image.new("RGB", size, (255, 128, 0)).save(path, kind)
    return path


def test_add_list_and_remove_with_an_image_in_use_kept(cli_any_db, tmp_path: Path):
    cli = cli_any_db
    cli("db", "upgrade")
    added = cli("media", "add", str(image(tmp_path / "Header art.png")))
    url = added.stdout.splitlines()[-1]
    name = url.rsplit("/", 1)[1]
    assert url == f"http://localhost:8000/media/{name}" and name.endswith(".png")
    assert "Added Header art.png (1200 × 675 px" in added.stdout
    assert f"Markdown: ![Header art]({url})" in added.stdout
    assert (tmp_path / "var" / "media" / name[:2] / name).is_file()
    again = cli("media", "add", "--json", str(image(tmp_path / "copy.png")), "--name", "Copy")
    assert json.loads(again.stdout)["created"] is False and json.loads(again.stdout)["name"] == name

    (tmp_path / "notes.png").write_text("not a picture")
    refused = cli("media", "add", str(tmp_path / "notes.png"), check=False)
    assert refused.returncode == 1 and "notes.png: not an image" in refused.stderr
    missing = cli("media", "add", str(tmp_path / "nowhere.png"), check=False)
    assert missing.returncode == 1 and "nowhere.png: cannot read the file" in missing.stderr
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff\xd8\xff" + b"\0" * (2 * 1024 * 1024))
    cli.env["NEWSLETTER_MEDIA_MAX_MB"] = "1"
    too_big = cli("media", "add", str(huge), check=False)
    del cli.env["NEWSLETTER_MEDIA_MAX_MB"]
    assert too_big.returncode == 1 and "more than the 1,048,576 taken" in too_big.stderr

    other = json.loads(cli("media", "add", "--json", str(image(tmp_path / "b.jpg", (200, 100), "JPEG"))).stdout)
    listed = json.loads(cli("media", "ls", "--json").stdout)
    assert [row["name"] for row in listed] == [other["name"], name]  # newest first
    assert listed[1]["filename"] == "Header art.png" and listed[1]["uploader"] == "cli"
    table = cli("media", "ls").stdout
    assert name in table and "2 image(s)." in table

    # An issue that shows it is sent (scheduled counts, as for `issues delete`): the image stays.
    cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    cli("subscribers", "add", "weekly", "ann@example.org", "--confirmed")
    issue_file = tmp_path / "issue.md"
    issue_file.write_text(SAMPLE_ISSUE.read_text(encoding="utf-8") + f"\n\n![Header art]({url})\n", encoding="utf-8")
    issue = cli("issues", "create", "weekly", str(issue_file)).stdout.split()[-1]
    cli("send", issue, "--at", "2099-01-04T08:00+00:00")
    kept = cli("media", "rm", name, check=False)
    assert kept.returncode == 1
    assert f"in use by a sent issue and cannot be deleted: issue {issue} " in kept.stderr
    assert len(json.loads(cli("media", "ls", "--json").stdout)) == 2
    # The other one goes, by its id.
    gone = cli("media", "rm", str(other["id"]))
    assert f"Deleted {other['name']}" in gone.stdout
    assert [row["name"] for row in json.loads(cli("media", "ls", "--json").stdout)] == [name]
    assert cli("media", "rm", "999", check=False).stderr.strip() == "error: no media item '999'"
