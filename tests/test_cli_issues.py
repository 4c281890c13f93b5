"""`newsletter issues ...` as an editor runs them."""

from __future__ import annotations

from pathlib import Path

from lxml import html as lxml_html

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ISSUE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"


def setup_list(cli) -> None:
    cli("lists", "create", "weekly", "--name", "Info War Weekly", "--from-email", "news@example.org")


def test_create_ls_show_preview_update(cli, tmp_path):
    setup_list(cli)
    created = cli("issues", "create", "weekly", str(SAMPLE_ISSUE))
    issue_id = created.stdout.strip().splitlines()[-1]
    assert issue_id.isdigit()
    assert "Qualified Support in Moscow" in cli("issues", "ls", "weekly").stdout
    shown = cli("issues", "show", issue_id).stdout
    assert "draft" in shown and "no problems" in shown

    preview = cli("issues", "preview", issue_id)
    html_path = tmp_path / "var" / "preview" / f"issue-{issue_id}.html"
    text_path = tmp_path / "var" / "preview" / f"issue-{issue_id}.txt"
    assert str(html_path) in preview.stdout and str(text_path) in preview.stdout
    page = lxml_html.fromstring(html_path.read_text(encoding="utf-8"))
    assert "Hello Ann Example," in page.text_content()
    assert any("/unsubscribe/" in href for href in page.xpath("//a/@href"))
    assert "Kremlin likely calculates" in text_path.read_text(encoding="utf-8")

    out_html, out_text = tmp_path / "p.html", tmp_path / "p.txt"
    cli("issues", "preview", issue_id, "--html", str(out_html), "--text", str(out_text))
    assert out_html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>") or "<html" in out_html.read_text()

    edited = tmp_path / "edited.md"
    edited.write_text("---\nsubject: A new subject\n---\nShort body with an ![](https://example.org/a.png) image.\n")
    result = cli("issues", "update", issue_id, str(edited))
    assert "warning:" in result.stderr and "no alt text" in result.stderr
    assert "A new subject" in cli("issues", "show", issue_id).stdout


def test_bad_issue_files_are_refused_and_nothing_changes(cli, tmp_path):
    setup_list(cli)
    issue_id = cli("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout.strip().splitlines()[-1]
    cases = {
        "nosubject.md": ("---\npreheader: hi\n---\nBody\n", "subject"),
        "relative.md": (
            "---\nsubject: Hi\n---\n\nSee [this](/local/page).\n",
            "relative.md:5: relative link URL '/local/page'",
        ),
        "badyaml.md": ("---\nsubject: [unclosed\n---\nBody\n", "badyaml.md:"),
        "template.md": ("---\nsubject: Hi\ntemplate: nosuchtemplate\n---\nBody\n", "template 'nosuchtemplate.html'"),
    }
    for name, (content, fragment) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        for args in (("issues", "create", "weekly", str(path)), ("issues", "update", issue_id, str(path))):
            result = cli(*args, check=False)
            assert result.returncode == 1, name
            assert fragment in result.stderr, (name, result.stderr)
            assert "Traceback" not in result.stderr
    listed = cli("issues", "ls").stdout
    assert listed.count("weekly") == 1 and "Qualified Support" in listed


def test_unknown_issue(cli):
    result = cli("issues", "show", "99", check=False)
    assert result.returncode == 1 and "no issue 99" in result.stderr


def test_user_template_folder_overrides_the_builtin_layout(cli, tmp_path):
    setup_list(cli)
    folder = tmp_path / "mytemplates"
    folder.mkdir()
    (folder / "issue.txt").write_text("CUSTOM TEXT {{ subject }}\n{{ body_text }}\n{{ personal.unsubscribe_url }}\n")
    cli.env["NEWSLETTER_TEMPLATE_DIR"] = str(folder)
    issue_id = cli("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout.strip().splitlines()[-1]
    text_file = tmp_path / "t.txt"
    cli("issues", "preview", issue_id, "--text", str(text_file))
    assert text_file.read_text().startswith("CUSTOM TEXT This Week in Info War")


def test_issues_are_stored_on_each_database(cli_any_db):
    cli_any_db("db", "upgrade")
    setup_list(cli_any_db)
    issue_id = cli_any_db("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout.strip().splitlines()[-1]
    assert "no problems" in cli_any_db("issues", "show", issue_id).stdout
