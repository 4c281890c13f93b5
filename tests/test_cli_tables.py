"""CLI listings: an address is never cut or folded at any terminal width, and every listing has --json."""

from __future__ import annotations

import io
import json

from rich.console import Console

from newsletter.cli.tables import Col, show
from tests.sendkit import SAMPLE_ISSUE

LONG = "averyveryverylongaddress.firstname.lastname@subdomain.example-company.com"
ROWS = [
    {"email": LONG, "name": "Ann Marie Example-Longname", "status": "confirmed", "since": "2026-12-04"},
    {"email": "bo@example.com", "name": "", "status": "unconfirmed", "since": "2026-12-04"},
]
COLUMNS = [Col("email", keep=True), Col("name"), Col("status"), Col("since")]


def test_an_address_is_whole_on_one_line_at_every_width():
    for width in range(12, 221, 4):
        buffer = io.StringIO()
        show(Console(file=buffer, width=width, soft_wrap=True, markup=False, highlight=False), COLUMNS, ROWS)
        lines = buffer.getvalue().splitlines()
        for row in ROWS:
            assert any(row["email"] in line for line in lines), f"{row['email']} cut or folded at width {width}"
        if width >= len(LONG) + 40:
            assert lines[0].startswith("┏")  # wide enough: a table, the other columns giving way
        if width < len(LONG):
            assert any(line.endswith(f"email: {LONG}") for line in lines)  # too narrow: blocks


def test_every_listing_answers_json(cli, tmp_path):
    cli("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    cli("subscribers", "add", "weekly", LONG, "--name", "Ann", "--confirmed")
    cli("subscribers", "add", "weekly", "bo@example.com")
    cli("suppressions", "add", "gone@example.com")
    cli("issues", "create", "weekly", str(SAMPLE_ISSUE))
    cli("admin", "create-token", "--name", "robot", "--role", "editor")
    listings = {
        ("lists", "ls"): "slug",
        ("issues", "ls"): "subject",
        ("subscribers", "ls", "weekly"): "email",
        ("suppressions", "ls"): "email",
        ("sends", "ls"): None,
        ("sends", "scheduled"): None,
        ("bounces", "ls"): None,
        ("admin", "tokens"): "name",
        ("admin", "users"): None,
        ("lists", "confirmation-runs", "weekly"): None,
    }
    for command, key in listings.items():
        result = cli(*command, "--json")
        rows = json.loads(result.stdout)
        assert isinstance(rows, list), command
        if key:
            assert rows and all(key in row for row in rows), (command, rows)
    assert {r["email"] for r in json.loads(cli("subscribers", "ls", "weekly", "--json").stdout)} == {
        LONG,
        "bo@example.com",
    }
    watch = cli("sends", "watch", "999", check=False)  # an unknown send: one line, no progress bar first
    assert watch.returncode == 1 and watch.stderr.strip() == "error: no send 999 (see `newsletter sends ls`)"

    # A narrow terminal: the address is still whole, on one line.
    cli.env["COLUMNS"] = "40"
    narrow = cli("subscribers", "ls", "weekly").stdout
    assert any(LONG in line for line in narrow.splitlines())
