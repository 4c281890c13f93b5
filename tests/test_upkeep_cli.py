"""Looking after issues and lists from the CLI: `issues duplicate`, `issues delete` (refused once
the issue has any send), and `lists update` (including --private / --public).

On SQLite: the domain functions under these commands are tried on PostgreSQL too, through the
API (tests/test_upkeep_api.py); what is the CLI's own (options, messages, exit codes) does not
depend on the database, and each CLI call starts a Python process."""

from __future__ import annotations

import re

from tests.conftest import ROOT

SAMPLE_ISSUE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_duplicate_makes_a_draft_and_delete_refuses_once_any_send_exists(cli):
    cli("db", "upgrade")
    cli("lists", "create", "weekly", "--name", "Info War Weekly", "--from-email", "news@example.org")
    cli("subscribers", "add", "weekly", "ann@example.com", "--confirmed")
    original = last_line(cli("issues", "create", "weekly", str(SAMPLE_ISSUE)).stdout)

    copied = cli("issues", "duplicate", original)
    copy = last_line(copied.stdout)
    assert copy.isdigit() and copy != original
    assert f"from issue {original}" in copied.stdout
    shown = cli("issues", "show", copy).stdout
    assert "draft" in shown and "Qualified Support in Moscow" in shown and "no problems" in shown
    assert cli("issues", "ls").stdout.count("Qualified Support in Moscow") == 2

    # A draft that was never sent goes.
    assert f"Deleted issue {copy}." in cli("issues", "delete", copy).stdout
    gone = cli("issues", "show", copy, check=False)
    assert gone.returncode == 1 and f"no issue {copy}" in gone.stderr
    assert cli("issues", "ls").stdout.count("Qualified Support in Moscow") == 1

    # A scheduled send keeps it, and so does the same send once cancelled.
    send_id = last_line(cli("send", original, "--at", "2099-01-04T08:00+00:00").stdout)
    refused = cli("issues", "delete", original, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"send {send_id} to weekly (scheduled)" in refused.stderr
    assert f"newsletter issues duplicate {original}" in refused.stderr  # what to do instead
    cli("sends", "cancel", send_id)
    refused = cli("issues", "delete", original, check=False)
    assert refused.returncode == 1 and f"send {send_id} to weekly (cancelled)" in refused.stderr
    assert "Qualified Support in Moscow" in cli("issues", "show", original).stdout

    # An issue with sends can still be copied.
    again = last_line(cli("issues", "duplicate", original).stdout)
    assert again.isdigit() and "draft" in cli("issues", "show", again).stdout

    for command in ("delete", "duplicate"):
        unknown = cli("issues", command, "9999", check=False)
        assert unknown.returncode == 1 and "no issue 9999" in unknown.stderr


def test_lists_update_changes_what_is_given_and_refuses_bad_fields(cli):
    cli("db", "upgrade")
    cli(
        "lists",
        "create",
        "weekly",
        "--name",
        "Info War Weekly",
        "--from-email",
        "news@example.org",
        "--reply-to",
        "desk@example.org",
    )

    changed = cli(
        "lists",
        "update",
        "weekly",
        "--name",
        "The Weekly",
        "--description",
        "Every Friday.",
        "--from-name",
        "Weekly Desk",
        "--from-email",
        "Editor@Example.ORG",
    ).stdout
    assert "Updated list weekly (The Weekly)" in changed and "Weekly Desk <editor@example.org>" in changed
    shown = cli("lists", "show", "weekly").stdout
    assert "The Weekly" in shown and "Every Friday." in shown and "Weekly Desk <editor@example.org>" in shown
    assert "desk@example.org" in shown  # untouched
    assert re.search(r"visibility\s+public", shown)

    assert "replies to the sender" in cli("lists", "update", "weekly", "--no-reply-to").stdout
    assert "(the sender)" in cli("lists", "show", "weekly").stdout
    cli("lists", "update", "weekly", "--reply-to", "letters@example.org")
    assert "letters@example.org" in cli("lists", "show", "weekly").stdout

    before = cli("lists", "show", "weekly").stdout
    cases = [
        (("--from-email", "not an address"), "--from-email"),
        (("--reply-to", "@example.org"), "--reply-to"),
        (("--name", "Line\nbreak"), "--name"),
        (("--from-name", "Desk\r\nBcc: evil@example.com"), "--from-name"),
        (("--name", "   "), "--name: a list needs a name"),
        (("--name", "Fine", "--reply-to", "a@example.org", "--no-reply-to"), "not both"),
        ((), "nothing to change"),
    ]
    for args, fragment in cases:
        result = cli("lists", "update", "weekly", *args, check=False)
        assert result.returncode == 1, args
        assert fragment in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert cli("lists", "show", "weekly").stdout == before  # nothing half-changed

    assert ", private, tracking off, in English." in cli("lists", "update", "weekly", "--private").stdout
    assert re.search(r"visibility\s+private", cli("lists", "show", "weekly").stdout)
    assert ", public, tracking off, in English." in cli("lists", "update", "weekly", "--public").stdout
    assert (
        ", public, tracking individual, in English."
        in cli("lists", "update", "weekly", "--tracking", "individual").stdout
    )
    bad = cli("lists", "update", "weekly", "--tracking", "sometimes", check=False)
    assert bad.returncode == 1 and "tracking must be one of off, anonymous, individual" in bad.stderr
    assert re.search(r"tracking\s+individual", cli("lists", "show", "weekly").stdout)
    assert re.search(r"visibility\s+public", cli("lists", "show", "weekly").stdout)
    both = cli("lists", "update", "weekly", "--public", "--private", check=False)  # a typo must not pick one
    assert both.returncode == 1 and "give --private or --public, not both" in both.stderr
    assert re.search(r"visibility\s+public", cli("lists", "show", "weekly").stdout)

    cli("lists", "create", "staff", "--name", "Staff", "--from-email", "hr@example.org", "--private")
    assert re.search(r"visibility\s+private", cli("lists", "show", "staff").stdout)
    cli("subscribers", "add", "staff", "bob@example.com", "--confirmed")  # admins still add people
    assert "bob@example.com" in cli("subscribers", "ls", "staff").stdout

    unknown = cli("lists", "update", "nope", "--name", "X", check=False)
    assert unknown.returncode == 1 and "no list 'nope'" in unknown.stderr
