"""A list's language (migration 0018), set the three ways a person sets it: the CLI, the API, the admin UI.

Each refuses a language that is not shipped with a message naming the shipped ones, and then
changes nothing; each runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select, text

from newsletter.store import db
from newsletter.store.models import MailingList
from subscribers.lists import create_list
from tests.apikit import api, assert_error  # noqa: F401
from tests.test_admin_ui import admin, csrf_of  # noqa: F401

REFUSAL = "language must be one of en (English), de (Deutsch), fr (Français), es (Español), not 'xx'"


def test_the_cli_sets_shows_and_changes_a_lists_language(cli_any_db):
    cli = cli_any_db
    cli("db", "upgrade")
    made = cli(
        "lists", "create", "wochen", "--name", "Die Woche", "--from-email", "news@example.org", "--language", "de"
    )
    assert made.stdout.strip() == "Created list wochen (Die Woche), sending as news@example.org, in Deutsch."
    cli("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    shown = cli("lists", "show", "wochen").stdout
    assert "language" in shown and "de (Deutsch)" in shown
    listed = {row["slug"]: row["language"] for row in json.loads(cli("lists", "ls", "--json").stdout)}
    assert listed == {"weekly": "en", "wochen": "de"}
    changed = cli("lists", "update", "wochen", "--language", "fr").stdout
    assert changed.strip().endswith("tracking off, in Français.")

    refused = cli("lists", "update", "wochen", "--language", "xx", check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == f"error: --language: {REFUSAL}"
    assert "fr (Français)" in cli("lists", "show", "wochen").stdout  # unchanged
    not_made = cli(
        "lists", "create", "x", "--name", "X", "--from-email", "news@example.org", "--language", "xx", check=False
    )
    assert not_made.returncode == 1 and REFUSAL in not_made.stderr
    assert "x" not in {row["slug"] for row in json.loads(cli("lists", "ls", "--json").stdout)}
    nothing = cli("lists", "update", "wochen", check=False)
    assert nothing.returncode == 1 and "--tracking or --language" in nothing.stderr


def test_the_api_has_a_lists_language_and_refuses_one_not_shipped(api):  # noqa: F811
    made = api.make_list("weekly", language="es")
    assert made["language"] == "es"
    assert api.make_list("daily")["language"] == "en"  # the default
    assert api.patch("/api/lists/weekly", json={"language": "de"}, expect=200).json()["language"] == "de"
    assert api.get("/api/lists/weekly", expect=200).json()["language"] == "de"
    for wrong in ("xx", "DE", "", 3):
        refused = api.patch("/api/lists/weekly", json={"language": wrong})
        assert_error(refused, 422, field="language")
    assert_error(
        api.make_list_raw({"slug": "x", "name": "X", "from_email": "a@example.org", "language": "xx"}),
        422,
        field="language",
    )
    assert api.get("/api/lists/weekly", expect=200).json()["language"] == "de"  # unchanged
    schema = api.get("/openapi.json", expect=200).json()["components"]["schemas"]
    assert schema["ListCreate"]["properties"]["language"]["enum"] == ["en", "de", "fr", "es"]
    assert schema["ListOut"]["properties"]["language"]["enum"] == ["en", "de", "fr", "es"]


def language_of(admin, slug: str) -> str:  # noqa: F811
    with admin.sessions() as s:
        value = s.scalar(select(MailingList.language).where(MailingList.slug == slug))
    assert value is not None
    return value


def test_the_admin_list_forms_choose_a_language(admin):  # noqa: F811
    client = admin.logged_in("ann")
    page = client.get("/admin/lists")
    assert '<select id="list-language" name="language"' in page.text
    for code, name in (("en", "English"), ("de", "Deutsch"), ("fr", "Français"), ("es", "Español")):
        assert f'<option value="{code}"' in page.text and f"{name} ({code})" in page.text
    made = client.post(
        "/admin/lists",
        data={
            "csrf_token": csrf_of(page.text),
            "slug": "semanal",
            "name": "El Semanal",
            "from_email": "news@example.org",
            "tracking": "off",
            "language": "es",
        },
    )
    assert made.status_code == 303 and language_of(admin, "semanal") == "es"
    one = client.get("/admin/lists/semanal")
    assert '<dd id="language-fact">Español (es)</dd>' in one.text
    assert '<option value="es" selected>' in one.text
    form = {
        "csrf_token": csrf_of(one.text),
        "name": "El Semanal",
        "from_email": "news@example.org",
        "visibility": "public",
        "tracking": "off",
    }
    assert client.post("/admin/lists/semanal", data={**form, "language": "fr"}).status_code == 303
    assert language_of(admin, "semanal") == "fr"
    refused = client.post("/admin/lists/semanal", data={**form, "name": "Renamed", "language": "xx"})
    assert refused.status_code == 400 and REFUSAL.replace("'", "&#39;") in refused.text
    assert 'aria-invalid="true"' in refused.text.split('id="edit-language"')[1].split(">")[0]
    assert language_of(admin, "semanal") == "fr"  # nothing changed, the name neither
    with admin.sessions() as s:
        assert s.scalar(select(MailingList.name).where(MailingList.slug == "semanal")) == "El Semanal"
    bad_new = client.post(
        "/admin/lists",
        data={
            "csrf_token": csrf_of(page.text),
            "slug": "x",
            "name": "X",
            "from_email": "a@example.org",
            "language": "xx",
        },
    )
    assert bad_new.status_code == 400 and '<option value="en"' in bad_new.text
    with admin.sessions() as s:
        assert s.scalar(select(MailingList.id).where(MailingList.slug == "x")) is None


def test_0018_gives_every_list_english_and_walks_back(tmp_path, database_url):
    engine = db.make_engine(database_url)
    try:
        sessions = db.session_factory(engine)
        with db.transaction(sessions) as s:
            create_list(s, "wochen", name="Die Woche", from_email="news@example.org", language="de")
        config = Config()
        config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
        config.attributes["engine"] = engine
        command.downgrade(config, "0017")
        assert "language" not in {c["name"] for c in inspect(engine).get_columns("mailing_lists")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT slug FROM mailing_lists")).scalars().all() == ["wochen"]
        with db.transaction(sessions) as s:  # today's code still adds a list to a 0017 database
            s.add(MailingList(slug="old", name="Old", from_email="news@example.org"))
        db.upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT slug, language FROM mailing_lists ORDER BY slug")).all()
        assert [tuple(r) for r in rows] == [("old", "en"), ("wochen", "en")]  # the column came back: English
        assert db.schema_is_current(engine)
    finally:
        engine.dispose()
