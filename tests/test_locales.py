"""The languages themselves: negotiation, translatable text, formats, and the shipped catalogues.

The catalogue tests are what keep a language shipped whole: every message of every catalogue
translated (each plural form, nothing fuzzy), its placeholders kept, the compiled ``.mo`` the
one its ``.po`` makes, and the catalogues up to date with the source (a template extracted to
a temporary file by ``make translations-template`` has exactly their message ids). The last
test runs ``make translations`` in a fresh copy of the checkout and finds nothing to change.
"""

from __future__ import annotations

import io
import pickle
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from newsletter.errors import InvalidInput
from newsletter.locales import formats, languages
from newsletter.locales.negotiation import negotiate
from newsletter.locales.translatable import Translatable, say, translatable, translatable_plural
from tests.conftest import ROOT

TRANSLATED = [code for code in languages.SHIPPED if code != languages.SOURCE]
VENV = Path(sys.prefix)  # the venv running the suite: its pybabel, its install stamp


def catalogue(language: str) -> Catalog:
    with languages.catalogue_file(language, ".po").open("rb") as po:
        return read_po(po, locale=language)


def forms(string: str | tuple[str, ...] | list[str] | None) -> list[str]:
    """A message's translation, each plural form apart (one for a message without plurals)."""
    return [string] if isinstance(string, str) else list(string or [""])


def message_ids(catalog: Catalog) -> set[str]:
    return {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}


# --- negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "fallback", "expected"),
    [
        ("de", "en", "de"),
        ("fr;q=0.9, de;q=0.8", "en", "fr"),
        ("de;q=0.8, fr;q=0.9", "en", "fr"),  # by quality, not by place
        ("de-AT, en;q=0.5", "en", "de"),  # a region of a shipped language
        ("ES-mx", "en", "es"),
        ("ja, zh;q=0.9", "de", "de"),  # none shipped: the list's language
        ("ja, fr;q=0.1", "de", "fr"),  # a shipped one, however low
        ("", "es", "es"),
        (None, "fr", "fr"),
        ("*", "de", "de"),  # anything: the list's
        ("ja, *;q=0.5, fr;q=0.4", "de", "de"),
        ("fr;q=0, de", "en", "de"),  # q=0: not this one
        ("fr;q=0", "es", "es"),
        ("fr;q=abc, de;q=0.5", "en", "de"),  # a malformed range is ignored
        ("fr;q=2, es", "en", "es"),
        ("en-GB, de;q=0.9", "de", "en"),
        ("de , fr", "en", "de"),  # the first of two equal ones
        ("x" * 5000 + ", de", "fr", "fr"),  # read up to a bound
    ],
)
def test_negotiation_picks_the_readers_most_wanted_shipped_language(header, fallback, expected):
    assert negotiate(header, fallback) == expected


def test_a_language_that_is_not_shipped_is_refused_naming_the_shipped_ones():
    assert languages.parse_language(" DE ") == "de"
    for wrong in ("xx", "de-DE", "german", ""):
        with pytest.raises(InvalidInput) as refused:
            languages.parse_language(wrong)
        assert refused.value.where == "--language"
        assert refused.value.message == (
            f"language must be one of en (English), de (Deutsch), fr (Français), es (Español), not {wrong!r}"
        )
    with pytest.raises(ValueError, match="not a shipped language"):
        languages.translations("xx")


# --- translatable text ------------------------------------------------------------------


def test_translatable_text_is_english_everywhere_until_it_is_said_in_a_language():
    reason = translatable("name is longer than 200 characters")
    message = translatable("please check your name: %(reason)s", reason=reason)
    assert message == "please check your name: name is longer than 200 characters"
    assert isinstance(message, str) and f"{message}!" == "please check your name: name is longer than 200 characters!"
    german = message.in_language(languages.translations("de"))
    assert german == "bitte prüfen Sie Ihren Namen: der Name ist länger als 200 Zeichen"  # the value too
    assert say(message, languages.translations("en")) == message
    assert say("plain", languages.translations("fr")) == "plain" and say(7, languages.translations("fr")) == 7
    # Pickled (a task argument, an exception in another process) it is its English text.
    again = pickle.loads(pickle.dumps(message))
    assert again == message and type(again) is str


def test_plurals_follow_each_languages_rules():
    def minutes(count: int, language: str) -> str:
        return translatable_plural(
            "please wait about %(count)d minute and try again",
            "please wait about %(count)d minutes and try again",
            count,
        ).in_language(languages.translations(language))

    assert minutes(1, "en") == "please wait about 1 minute and try again"
    assert minutes(2, "en") == "please wait about 2 minutes and try again"
    assert minutes(1, "de") == "bitte warten Sie etwa 1 Minute und versuchen Sie es dann noch einmal"
    assert minutes(5, "de") == "bitte warten Sie etwa 5 Minuten und versuchen Sie es dann noch einmal"
    assert minutes(0, "fr") == "veuillez patienter environ 0 minute et réessayer"  # French counts 0 as one
    assert minutes(5, "fr") == "veuillez patienter environ 5 minutes et réessayer"
    assert minutes(5, "es") == "espera alrededor de 5 minutos y vuelve a intentarlo"
    lifetime = formats.lifetime(7)
    assert isinstance(lifetime, Translatable) and lifetime == "7 days"
    assert [formats.lifetime(d).in_language(languages.translations("de")) for d in (1, 7, 0.5)] == [
        "1 Tag",
        "7 Tage",
        "12 Stunden",
    ]
    assert formats.lifetime(1 / 24) == "1 hour"


def test_dates_and_lists_of_names_are_written_as_each_language_writes_them():
    day = datetime(2026, 1, 7, 23, 30, tzinfo=UTC)
    assert [formats.long_date(day, code) for code in ("en", "de", "fr", "es")] == [
        "7 January 2026",
        "7. Januar 2026",
        "7 janvier 2026",
        "7 de enero de 2026",
    ]
    assert formats.long_date(date(2026, 5, 1), "de") == "1. Mai 2026" and formats.long_date(None, "de") == ""
    assert formats.either_of(["Weekly"], "de") == "Weekly"
    assert formats.either_of(["Weekly", "The Monthly"], "en") == "Weekly or The Monthly"
    assert formats.either_of(["Weekly", "The Monthly"], "de") == "Weekly oder The Monthly"
    assert formats.either_of(["A", "B", "C"], "fr") == "A, B ou C"
    assert formats.either_of(["A", "B"], "es") == "A o B"


# --- the catalogues ---------------------------------------------------------------------


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_of_a_shipped_catalogue_is_translated_with_its_placeholders(language):
    catalog = catalogue(language)
    messages = [m for m in catalog if m.id]
    assert len(messages) > 100  # the catalogue was read
    missing = [m.id for m in messages if not all(form.strip() for form in forms(m.string))]
    assert missing == [], f"{language}: untranslated messages: {missing}"
    fuzzy = [m.id for m in messages if m.fuzzy]
    assert fuzzy == [], f"{language}: fuzzy messages (check the translation, then remove the flag): {fuzzy}"
    assert not catalog.obsolete, f"{language}: obsolete messages: {list(catalog.obsolete)}"
    plurals = [m for m in messages if m.pluralizable]
    assert plurals and all(len(forms(m.string)) == catalog.num_plurals for m in plurals)
    # Babel's checkers: the same %(name)s placeholders as the message id, in every form.
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()]
    assert problems == [], f"{language}: {problems}"


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalogue_is_the_one_its_source_makes(language):
    compiled = io.BytesIO()
    write_mo(compiled, catalogue(language))
    shipped = languages.catalogue_file(language).read_bytes()
    assert compiled.getvalue() == shipped, f"{language}: messages.mo is out of date: run `make translations`"


def test_the_catalogues_have_exactly_the_messages_of_the_source(tmp_path):
    """A string added, changed or removed in a template or the code, and `make translations` not run, fails here."""
    template = tmp_path / "messages.pot"
    extracted = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            str(VENV / ".installed"),
            "translations-template",
            f"POT={template}",
            f"VENV={VENV}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_make_environ(),
    )
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    with template.open("rb") as pot:
        source = message_ids(read_po(pot))
    assert len(source) > 100 and "Confirm your subscription to %(list_name)s" in source
    for language in TRANSLATED:
        ids = message_ids(catalogue(language))
        assert sorted(source - ids) == [], f"{language}: not in the catalogue yet: run `make translations`"
        assert sorted(ids - source) == [], f"{language}: no longer in the source: run `make translations`"


@pytest.mark.slow
def test_make_translations_in_a_fresh_checkout_changes_nothing(tmp_path):
    """From the committed files alone, `make translations` makes exactly the committed catalogues."""
    checkout = tmp_path / "checkout"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        else:
            shutil.copy2(source, target)
    assert not (checkout / "newsletter" / "locales" / "messages.pot").exists()  # generated, never committed
    made = subprocess.run(
        ["make", "--no-print-directory", "-o", str(VENV / ".installed"), "translations", f"VENV={VENV}"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
        env=_make_environ(),
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    assert (made.stdout + made.stderr).count("(100%) translated") == len(TRANSLATED), made.stderr
    for language in TRANSLATED:
        for suffix in (".po", ".mo"):
            relative = languages.catalogue_file(language, suffix).relative_to(ROOT)
            assert (checkout / relative).read_bytes() == (ROOT / relative).read_bytes(), f"{relative} changed"


def _make_environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
