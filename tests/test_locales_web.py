"""What subscribers read, in each shipped language: the pages by their browser's Accept-Language, else
their list's language; the emails and every issue's footer in their list's language.

The subscriber web app on a real database (SQLite and PostgreSQL), emails through the real notice
code and SMTP transport to a capture server (test_locales_browser.py runs the whole journey with a
real worker and Chromium).
"""

from __future__ import annotations

import html
import re

import pytest
from babel.dates import format_date
from babel.messages.pofile import read_po
from sqlalchemy import update

from newsletter.content.issue_files import IssueSource
from newsletter.content.issues import RenderSettings, create_issue, preview_issue
from newsletter.delivery import notices, preferences_mail, sending
from newsletter.locales import languages
from newsletter.store import db
from newsletter.store.models import Delivery, MailingList, Subscription
from subscribers.lists import update_list
from tests.test_web import BASE, add
from tests.test_web import site as site  # the fixture
from tests.textkit import body_text, must_match

RENDER = RenderSettings.create(base_url=BASE, postal_address="1 Example Street", user_template_dir=None)


def english_left(language: str) -> list[str]:
    """The catalogue's English texts that must not be on a page in ``language``: those it translates
    differently, whole (no placeholder) and long enough not to be part of a word."""
    with languages.catalogue_file(language, ".po").open("rb") as po:
        catalog = read_po(po, locale=language)
    return [
        m.id
        for m in catalog
        if isinstance(m.id, str) and m.id and "%(" not in m.id and len(m.id) >= 5 and m.string != m.id
    ]


def lang_of(page_html: str) -> str:
    return must_match(re.search(r'<html lang="([^"]+)">', page_html)).group(1)


def visible(page_html: str) -> str:
    """The page's text and its attributes' text as a reader meets them, without the URLs."""
    return html.unescape(re.sub(r'(href|action|src)="[^"]*"', "", page_html))


@pytest.fixture
def languages_site(site):
    """weekly (English, the default) with Ann confirmed, daily in Spanish."""
    with db.transaction(site.sessions) as s:
        update_list(s, "daily", language="es")
    add(site, "ann@example.com", name="Ann")
    return site


def test_a_page_follows_the_readers_language_then_the_lists(languages_site):
    client = languages_site.client()

    def page(slug: str, accept: str | None):
        headers = {"Accept-Language": accept} if accept is not None else {}
        answer = client.get(f"/subscribe/{slug}", headers=headers)
        assert answer.status_code == 200
        assert "Accept-Language" in answer.headers["vary"]
        assert answer.headers["content-language"] == lang_of(answer.text)
        return answer

    german = page("weekly", "de")
    assert lang_of(german.text) == "de" and "<h1>The Weekly abonnieren</h1>" in german.text
    assert '<label for="email">E-Mail-Adresse</label>' in german.text
    french = page("weekly", "fr;q=0.9, de;q=0.8")
    assert lang_of(french.text) == "fr" and "<h1>S'abonner à The Weekly</h1>" in french.text
    assert lang_of(page("weekly", "de-CH, en;q=0.5").text) == "de"
    unknown = page("weekly", "ja, zh;q=0.8")  # nothing shipped: the list's language (English)
    assert lang_of(unknown.text) == "en" and "<h1>Subscribe to The Weekly</h1>" in unknown.text
    spanish = page("daily", "ja")  # a Spanish list
    assert lang_of(spanish.text) == "es" and "<h1>Suscríbete a The Daily</h1>" in spanish.text
    assert lang_of(page("daily", None).text) == "es"
    assert lang_of(page("daily", "en-US,en;q=0.9").text) == "en"  # the reader's shipped language first
    assert lang_of(page("daily", "fr;q=0, de;q=0.1").text) == "de"


@pytest.mark.parametrize("language", list(languages.SHIPPED))
def test_every_subscriber_page_is_in_each_shipped_language(languages_site, language):
    site = languages_site
    client = site.client()
    accept = {"Accept-Language": language}
    with db.transaction(site.sessions) as s:  # one issue in the archive
        issue, _ = create_issue(
            s, "weekly", IssueSource(subject="Issue one", preheader="", template="issue", body_markdown="Hi."), RENDER
        )
        send, _ = sending.start_send(s, issue.id, RENDER, batch_size=100)
        s.execute(update(Delivery).where(Delivery.send_id == send.id).values(status="sent"))
    client.post("/subscribe/weekly", data={"email": "bob@example.com"}, headers=accept)
    confirm = site.confirm_link("bob@example.com").removeprefix(BASE)
    unsubscribe = f"/unsubscribe/{site.token('ann@example.com', 'unsubscribe')}"
    preferences = f"/preferences/{site.token('ann@example.com', 'preferences')}"
    expired = f"/preferences/{site.token('ann@example.com', 'preferences', issued_at=1_000_000)}"
    pages = {
        "home": client.get("/", headers=accept),
        "subscribe": client.get("/subscribe/weekly", headers=accept),
        "subscribe_sent": client.post("/subscribe/weekly", data={"email": "cy@example.com"}, headers=accept),
        "subscribe_error": client.post("/subscribe/weekly", data={"email": "not-an-address"}, headers=accept),
        "confirm": client.get(confirm, headers=accept),
        "welcome": client.post(confirm, headers=accept),
        "unsubscribe": client.get(unsubscribe, headers=accept),
        "preferences": client.get(preferences, headers=accept),
        "left": client.post(f"{preferences}/leave", data={"list": "weekly"}, headers=accept),
        "unsubscribed": client.post(unsubscribe, headers=accept),
        "expired": client.get(expired, headers=accept),
        "renewed": client.post(f"{expired}/renew", headers=accept),
        "archive": client.get("/archive/weekly", headers=accept),
        "not_found": client.get("/subscribe/nope", headers=accept),
        "bad_link": client.get("/unsubscribe/v1.forged", headers=accept),
    }
    statuses = {name: page.status_code for name, page in pages.items()}
    assert statuses == {
        **dict.fromkeys(pages, 200),
        "subscribe_error": 400,
        "expired": 410,
        "not_found": 404,
        "bad_link": 400,
    }
    leftovers = english_left(language) if language != languages.SOURCE else []
    assert language == languages.SOURCE or len(leftovers) > 60
    for name, page in pages.items():
        assert lang_of(page.text) == language, name
        assert page.headers["content-language"] == language, name
        shown = visible(page.text)
        found = [text for text in leftovers if text in shown]
        assert found == [], f"{name} in {language} still says: {found}"
    # And each says what it should, in its language (a few landmarks).
    landmarks = {
        "en": ("Check your inbox", "Yes, subscribe me", "You're unsubscribed", "Past issues", "Not found"),
        "de": (
            "Sehen Sie in Ihr Postfach",
            "Ja, abonnieren",
            "Sie sind abgemeldet",
            "Frühere Ausgaben",
            "Nicht gefunden",
        ),
        "fr": (
            "Consultez votre boîte de réception",
            "Oui, je m'abonne",
            "Votre désabonnement est confirmé",
            "Numéros précédents",
            "Introuvable",
        ),
        "es": (
            "Revisa tu bandeja de entrada",
            "Sí, quiero suscribirme",
            "Se ha cancelado tu suscripción",
            "Números anteriores",
            "No encontrado",
        ),
    }[language]
    for name, landmark in zip(
        ("subscribe_sent", "confirm", "unsubscribed", "archive", "not_found"), landmarks, strict=True
    ):
        assert landmark in visible(pages[name].text), (name, landmark)


def test_errors_and_notices_from_the_code_are_in_the_pages_language(languages_site):
    site = languages_site
    client = site.client()
    bad = client.post("/subscribe/weekly", data={"email": "nope"}, headers={"Accept-Language": "fr"})
    assert bad.status_code == 400
    assert "Veuillez saisir une adresse e-mail complète, comme ann@example.com." in html.unescape(bad.text)
    long_name = client.post(
        "/subscribe/daily", data={"email": "dee@example.com", "name": "x" * 201}, headers={"Accept-Language": "ja"}
    )  # the Spanish list's language
    assert "Revisa tu nombre: el nombre tiene más de 200 caracteres." in html.unescape(long_name.text)
    english = client.post("/subscribe/weekly", data={"email": "nope"}, headers={"Accept-Language": "en"})
    assert "Please enter a whole email address, like ann@example.com." in english.text
    forged = client.get("/confirm/v1.1.1.1.forged", headers={"Accept-Language": "de"})
    assert forged.status_code == 400
    assert "Dieser Link ist ungültig; kopieren Sie den ganzen Link aus der E-Mail." in forged.text
    preferences = f"/preferences/{site.token('ann@example.com', 'preferences')}"
    left = client.post(f"{preferences}/leave", data={"list": "weekly"}, headers={"Accept-Language": "es"})
    assert "Te has dado de baja de The Weekly. Ya no lo recibirás." in left.text
    renamed = client.post(f"{preferences}/name", data={"name": "Ann\nEvil"}, headers={"Accept-Language": "de"})
    assert renamed.status_code == 400
    assert "Bitte prüfen Sie Ihren Namen: der Name enthält ein Steuerzeichen" in renamed.text
    # The CLI and the API still read the English text of the same errors (test_web, test_api_*).


def test_dates_on_pages_are_written_as_the_pages_language_writes_them(languages_site):
    site = languages_site
    with site.sessions() as s:
        confirmed = s.query(Subscription.confirmed_at).join(MailingList).filter(MailingList.slug == "weekly").scalar()
    assert confirmed is not None
    preferences = f"/preferences/{site.token('ann@example.com', 'preferences')}"
    client = site.client()
    for language, words in (
        ("en", "Subscribed since"),
        ("de", "Abonniert seit dem"),
        ("fr", "Abonnement actif depuis le"),
        ("es", "Suscripción activa desde el"),
    ):
        page = client.get(preferences, headers={"Accept-Language": language})
        written = format_date(confirmed.date(), format="long", locale="en_GB" if language == "en" else language)
        assert f"{words} {written}" in page.text, language
    assert format_date(confirmed.date(), format="long", locale="de") != format_date(
        confirmed.date(), format="long", locale="fr"
    )


def test_a_german_lists_confirmation_email_is_german_whatever_the_readers_browser(languages_site):
    site = languages_site
    with db.transaction(site.sessions) as s:
        update_list(s, "weekly", language="de")
    answer = site.client().post(
        "/subscribe/weekly", data={"email": "eva@example.com", "name": "Eva"}, headers={"Accept-Language": "en"}
    )
    assert "Check your inbox" in answer.text  # the page: the reader's language
    [mail] = site.mails("eva@example.com")
    assert mail["Subject"] == "Bestätigen Sie Ihr Abonnement von The Weekly"
    text, page = body_text(mail).replace("\r\n", "\n"), body_text(mail, "html")
    assert text.startswith("The Weekly\n\nHallo Eva,\n\nJemand, hoffentlich Sie, möchte The Weekly an eva@example.com")
    flat = " ".join(text.split())  # as read, whatever the wrapping at 78 columns
    assert "Der Link gilt 7 Tage." in flat
    assert "Sie erhalten diese eine E-Mail, weil eva@example.com in das Anmeldeformular von The Weekly" in flat
    assert max(len(line) for line in text.splitlines() if "://" not in line) <= 78
    assert '<html lang="de"' in page and "Bitte bestätigen Sie Ihr Abonnement" in page and "Ja, abonnieren" in page
    assert "Someone" not in text + page and "confirm" not in text.replace(site.confirm_link("eva@example.com"), "")


def test_the_fresh_preferences_link_email_is_in_its_lists_language(languages_site):
    site = languages_site
    add(site, "fay@example.com", "daily")
    subscriber_id, list_id = site.ids("fay@example.com", "daily")
    with site.sessions() as s:
        to = preferences_mail.recipient(s, subscriber_id, list_id)
    assert to is not None
    message, recipient = preferences_mail.preferences_link_message(to, RENDER, site.signer, preferences_days=90)
    assert message.headers.subject == "Tus preferencias para The Daily"
    text = message.build(recipient)[1].decode("utf-8", "replace")
    assert "El enlace funciona durante 90 d=C3=ADas." in text or "El enlace funciona durante 90 días." in text


def test_an_issues_footer_is_in_its_lists_language_and_the_body_as_written(languages_site):
    site = languages_site
    with db.transaction(site.sessions) as s:
        update_list(s, "weekly", language="fr")
        issue, _ = create_issue(
            s,
            "weekly",
            IssueSource(subject="Édition", preheader="", template="issue", body_markdown="Written *as is*."),
            RENDER,
        )
        page, text, _ = preview_issue(s, issue.id, RENDER)
    assert '<html lang="fr"' in page and "Written <em" in page
    footer = html.unescape(page[page.index('class="footer"') :])
    assert "Vous recevez cet e-mail suite à votre abonnement à The Weekly avec l'adresse" in footer
    assert "Voir dans votre navigateur" in footer and "Se désabonner" in footer and "Modifier vos préférences" in footer
    assert "Vous recevez cet e-mail suite à votre abonnement à The Weekly avec" in text
    assert "Se désabonner\u00a0:" in text and "Unsubscribe" not in text + footer


def test_a_send_to_several_lists_names_them_in_the_primary_lists_language(languages_site):
    site = languages_site
    add(site, "gil@example.com", "daily")
    with db.transaction(site.sessions) as s:
        issue, _ = create_issue(
            s, "daily", IssueSource(subject="Dos", preheader="", template="issue", body_markdown="Hola."), RENDER
        )
        send, _ = sending.start_send(s, issue.id, RENDER, list_slugs=["daily", "weekly"], batch_size=100)
        frozen = send.text
    assert "Recibes este correo porque te suscribiste a The Daily o The Weekly con la" in frozen


def test_an_archived_copy_stands_in_for_the_reader_in_the_lists_language(languages_site):
    site = languages_site
    with db.transaction(site.sessions) as s:
        update_list(s, "weekly", language="de")
        issue, _ = create_issue(
            s, "weekly", IssueSource(subject="Eins", preheader="", template="issue", body_markdown="Text."), RENDER
        )
        send, _ = sending.start_send(s, issue.id, RENDER, batch_size=100)
        s.execute(update(Delivery).where(Delivery.send_id == send.id).values(status="sent"))
    copy = site.client().get(f"/archive/weekly/{issue.id}")
    assert copy.status_code == 200
    shown = html.unescape(copy.text)
    assert "unter der Adresse einer Leserin oder eines Lesers." in re.sub(r"<[^>]+>", "", shown)


def test_the_english_confirmation_email_reads_as_it_always_did(languages_site):
    """English is the source language: the words are the templates' own, unchanged."""
    site = languages_site
    site.client().post("/subscribe/weekly", data={"email": "hal@example.com"}, headers={"Accept-Language": "de"})
    [mail] = site.mails("hal@example.com")
    assert mail["Subject"] == "Confirm your subscription to The Weekly"
    text = body_text(mail).replace("\r\n", "\n")
    assert "Hello there,\n\nSomeone, hopefully you, asked to receive The Weekly at hal@example.com. To\nstart" in text
    flat = " ".join(text.split())
    assert "The link works for 7 days. If you did not ask for this, ignore this email: you will not hear" in flat
    assert notices.link_lifetime(1) == "1 day" and notices.link_lifetime(0.5) == "12 hours"
