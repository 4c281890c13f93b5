"""`newsletter templates` and `lists update --template` as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_email_templates import issue_text, pair


def test_copy_the_shipped_layout_store_choose_refuse_and_delete_from_the_cli(cli_any_db, tmp_path: Path):
    cli = cli_any_db
    cli("db", "upgrade")
    cli("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")

    # The shipped layout, printed as one template, is a copy that can be stored as it is.
    html, text = tmp_path / "layout.html", tmp_path / "layout.txt"
    html.write_text(cli("templates", "show", "issue", "--part", "html").stdout, encoding="utf-8")
    text.write_text(cli("templates", "show", "issue", "--part", "text").stdout, encoding="utf-8")
    assert html.read_text().startswith("<!DOCTYPE html>") and "{{ body_html }}" in html.read_text()
    assert 'xmlns:o="urn:schemas-microsoft-com:office:office"' in html.read_text()  # printed as is, no emoji
    assert cli("templates", "check", "--html", str(html), "--text", str(text)).stdout.strip() == (
        "No problems: the templates can be stored."
    )
    created = cli("templates", "create", "house", "--html", str(html), "--text", str(text))
    assert created.stdout.startswith("Created template house.")

    # A syntax error names the file and the line; nothing changes.
    broken = html.read_text().replace("{{ list_name }}</a>", "{{ list_name }</a>")
    line = next(i for i, row in enumerate(broken.splitlines(), 1) if "{{ list_name }</a>" in row)
    bad = tmp_path / "bad.html"
    bad.write_text(broken, encoding="utf-8")
    refused = cli("templates", "update", "house", "--html", str(bad), check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error: {bad}:{line}: template syntax error: unexpected '}}'"
    refused = cli("templates", "create", "other", "--html", str(bad), "--text", str(text), check=False)
    assert refused.returncode == 1 and f"{bad}:{line}: template syntax error" in refused.stderr
    checked = cli("templates", "check", "--html", str(bad), "--text", str(text), check=False)
    assert (
        checked.returncode == 1
        and checked.stderr.strip() == f"error: {bad}:{line}: template syntax error: unexpected '}}'"
    )
    # The sandbox: Python behind a value is refused with its line.
    sneaky = tmp_path / "sneaky.html"
    sneaky.write_text(html.read_text().replace("{{ list_name }}</a>", "{{ ''.__class__.__mro__ }}</a>"))
    refused = cli("templates", "create", "sneaky", "--html", str(sneaky), "--text", str(text), check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: {sneaky}:{line}: template error: access to attribute '__class__' of 'str' object is unsafe."
    )
    # A template without the unsubscribe link, and a bad name.
    no_link = tmp_path / "nolink.txt"
    no_link.write_text(text.read_text().replace("{{ personal.unsubscribe_url }}", ""))
    refused = cli("templates", "create", "nolink", "--html", str(html), "--text", str(no_link), check=False)
    assert refused.stderr.strip() == (
        f"error: {no_link}: the text template has no unsubscribe link, which every email needs; "
        "add {{ personal.unsubscribe_url }}"
    )
    refused = cli("templates", "create", "Big", "--html", str(html), "--text", str(text), check=False)
    assert refused.stderr.startswith("error: NAME: template name 'Big' must be")
    listed = json.loads(cli("templates", "ls", "--json").stdout)
    assert [(t["name"], t["shipped"], t["updated_by"]) for t in listed] == [
        ("issue", True, ""),
        ("house", False, "cli"),
    ]

    # A list uses it; an issue of the list is rendered in it; it cannot be deleted while the list uses it.
    mine = tmp_path / "mine.html"
    mine_html, mine_text = pair("MINE")
    mine.write_text(mine_html)
    (tmp_path / "mine.txt").write_text(mine_text)
    cli("templates", "update", "house", "--html", str(mine), "--text", str(tmp_path / "mine.txt"))
    updated = cli("lists", "update", "weekly", "--template", "house")
    assert updated.stdout.strip().endswith("tracking off, in English.\nIts issues are mailed in the layout house.")
    assert ["layout", "house"] in [line.split() for line in cli("lists", "show", "weekly").stdout.splitlines()]
    issue_file = tmp_path / "issue.md"
    issue_file.write_text(issue_text())
    issue = cli("issues", "create", "weekly", str(issue_file)).stdout.split()[-1]
    preview = tmp_path / "preview.html"
    cli("issues", "preview", issue, "--html", str(preview))
    assert "MINE The Weekly" in preview.read_text()
    shown = [line.split(maxsplit=1) for line in cli("issues", "show", issue).stdout.splitlines()]
    assert ["template", "house (the list's layout)"] in [[k, v.strip()] for k, v in (x for x in shown if len(x) == 2)]
    refused = cli("templates", "rm", "house", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: template 'house' is in use by the list weekly; choose another layout for them first, then delete it"
    )
    refused = cli("templates", "rm", "issue", check=False)
    assert refused.stderr.strip() == (
        "error: the shipped layout is the default of every list and issue; it cannot be deleted"
    )
    refused = cli("lists", "update", "weekly", "--template", "nope", check=False)
    assert refused.returncode == 1 and "--template: no stored template 'nope' (stored: house;" in refused.stderr
    cli("lists", "update", "weekly", "--template", "issue")
    cli("issues", "preview", issue, "--html", str(preview))
    assert "MINE" not in preview.read_text()
    assert cli("templates", "rm", "house").stdout.strip() == "Deleted template house."
    assert [t["name"] for t in json.loads(cli("templates", "ls", "--json").stdout)] == ["issue"]
