"""A German list's readers, end to end: browsers in German, French and Japanese, and the emails.

A real `newsletter web` process, a real `newsletter worker`, Redis, the capture SMTP server,
the CLI, and Debian's Chromium driven by Playwright with the browser's own language (its
``Accept-Language``): the pages follow the browser when it asks for a shipped language and the
list's language otherwise; the confirmation email and the footer of an issue are in the list's
language whoever subscribed.
"""

from __future__ import annotations

import re

import pytest

from tests.test_web_journey import chromium, free_port, start_web, text_of, wait_for_mail  # noqa: F401
from tests.textkit import body_text, must_match

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]


def test_a_german_list_in_german_french_and_japanese_browsers(chromium, newsroom):  # noqa: F811
    room = newsroom
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    room.cli("lists", "create", "woche", "--name", "Die Woche", "--from-email", "news@example.org", "--language", "de")
    room.start_worker(concurrency=1)
    web = start_web(room.cli.env, room.tmp, port)
    try:
        # A German browser: the form, the confirmation email, the confirm page and the welcome, all German.
        german = chromium.new_context(locale="de-DE").new_page()
        german.goto(f"{base}/subscribe/woche")
        assert german.evaluate("document.documentElement.lang") == "de"
        assert german.inner_text("h1") == "Die Woche abonnieren"
        german.fill("#email", "lena@example.com")
        german.fill("#name", "Lena")
        german.click("button[type=submit]")
        assert german.inner_text("h1") == "Sehen Sie in Ihr Postfach"

        [mail] = wait_for_mail(room, "lena@example.com", 1)
        assert mail["Subject"] == "Bestätigen Sie Ihr Abonnement von Die Woche"
        text = text_of(mail)
        assert "Hallo Lena," in text and "Der Link gilt 7 Tage." in " ".join(text.split())
        assert '<html lang="de"' in body_text(mail, "html")
        link = must_match(re.search(rf"{re.escape(base)}/confirm/\S+", text)).group(0)
        german.goto(link)
        assert german.inner_text("button[type=submit]") == "Ja, abonnieren"
        german.click("button[type=submit]")
        assert german.inner_text("h1") == "Willkommen, Lena!"
        assert "lena@example.com" in room.cli("subscribers", "ls", "woche", "--status", "confirmed").stdout

        # A French browser reads the same list's form in French; a Japanese one, in the list's German.
        french = chromium.new_context(locale="fr-FR").new_page()
        french.goto(f"{base}/subscribe/woche")
        assert french.evaluate("document.documentElement.lang") == "fr"
        assert french.inner_text("h1") == "S'abonner à Die Woche"
        french.fill("#email", "remi@example.com")
        french.click("button[type=submit]")
        assert french.inner_text("h1") == "Consultez votre boîte de réception"
        [french_mail] = wait_for_mail(room, "remi@example.com", 1)
        assert french_mail["Subject"] == "Bestätigen Sie Ihr Abonnement von Die Woche"  # the list's language
        japanese = chromium.new_context(locale="ja-JP").new_page()
        japanese.goto(f"{base}/subscribe/woche")
        assert japanese.evaluate("document.documentElement.lang") == "de"
        assert japanese.inner_text("h1") == "Die Woche abonnieren"

        # The next issue goes out through the worker with its footer in German.
        send_id = room.send(room.create_issue("woche"))
        assert room.wait_status(send_id)["sent"] == 1
        issue = wait_for_mail(room, "lena@example.com", 2)[-1]
        footer = " ".join(text_of(issue).replace("\r\n", "\n").split("\n-- \n", 1)[1].split())
        assert footer.startswith(
            "Sie erhalten diese E-Mail aufgrund Ihres Abonnements von Die Woche unter der Adresse lena@example.com."
        )
        assert "Diese E-Mail im Browser ansehen:" in footer and "Abmelden:" in footer
        shown = body_text(issue, "html")
        assert '<html lang="de"' in shown and "Im Browser ansehen" in shown and "Einstellungen ändern" in shown
        assert "Qualified Support in Moscow" in shown  # the editor's words, as written

        # Its view-in-browser copy, and its archive, read in the browser's language around it.
        archive = f"{base}/archive/woche"
        french.goto(archive)
        assert french.inner_text("h1") == "Numéros précédents"
        assert french.locator('link[rel=alternate][type="application/atom+xml"]').get_attribute("href") == (
            "/archive/woche/feed.xml"
        )
        for context in (german.context, french.context, japanese.context):
            context.close()
    finally:
        web.stop()
        room.stop_all()
