"""The subscriber web app over HTTP: every route, tampered links, limits, headers.

The app is built from real Settings on a real database (SQLite and PostgreSQL), with the
machine's Redis for the rate limits; confirmation emails go through the real notice code
and SMTP transport to a capture server (the Celery path is in test_web_journey.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.content.issue_files import IssueSource
from newsletter.content.issues import RenderSettings, create_issue
from newsletter.delivery import batch_loop, notices, sending
from newsletter.delivery.editions import SendEditions
from newsletter.delivery.ports import Outcome
from newsletter.delivery.recipient_store import SqlRecipientStore
from newsletter.delivery.send_control import SendControl
from newsletter.devtools.smtp_capture import CaptureServer
from newsletter.mail.transport import SmtpTransport
from newsletter.store import db
from newsletter.store.models import Delivery, MailingList, Subscriber, Subscription, Suppression
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from subscribers.suppressions import suppress
from subscribers.tokens import TokenSigner
from tests.textkit import body_text, must_match

# Starlette prefers the httpx2 package for its TestClient; httpx is what this project installs.

KEY = "test-secret-key-0123456789abcdef"
OLD_KEY = "old-secret-key-0123456789"
BASE = "https://news.example.org"
SECURITY_HEADERS = ("content-security-policy", "x-frame-options", "referrer-policy", "x-content-type-options")


@dataclass
class Site:
    settings: Settings
    sessions: sessionmaker[Session]
    capture: CaptureServer
    signer: TokenSigner

    def client(self, ip: str = "203.0.113.7", *, send_confirmation=None, **settings_overrides: str):
        from fastapi.testclient import TestClient

        from newsletter.http.app import create_app

        settings = self.settings
        if settings_overrides:
            settings = Settings.from_environ({**self.environ, **settings_overrides})
        app = create_app(
            settings, sessions=self.sessions, send_confirmation=send_confirmation or self.send_confirmation
        )
        return TestClient(app, client=(ip, 50000), follow_redirects=False, raise_server_exceptions=False)

    environ: dict[str, str] = field(default_factory=dict)  # the settings' environment, for a client with overrides

    def send_confirmation(self, request) -> None:
        """What a worker does with the task, done at once: render, compile, send over SMTP."""
        render = RenderSettings.create(
            base_url=self.settings.base_url, postal_address=self.settings.postal_address, user_template_dir=None
        )
        with SmtpTransport(self.settings.smtp) as transport:
            notices.send_confirmation(
                self.sessions,
                transport,
                render,
                self.signer,
                request.subscription_id,
                request.requested_at,
                confirm_days=self.settings.confirm_days,
            )

    def ids(self, email: str, slug: str = "weekly") -> tuple[int, int]:
        with self.sessions() as s:
            subscriber_id = s.scalar(select(Subscriber.id).where(Subscriber.email == email))
            list_id = s.scalar(select(MailingList.id).where(MailingList.slug == slug))
        assert subscriber_id is not None and list_id is not None
        return subscriber_id, list_id

    def token(self, email: str, purpose: str, slug: str = "weekly", *, issued_at: int | None = None) -> str:
        return self.signer.make(*self.ids(email, slug), purpose, issued_at=issued_at)

    def subscription(self, email: str, slug: str = "weekly") -> Subscription | None:
        with self.sessions() as s:
            return s.scalar(
                select(Subscription)
                .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(Subscriber.email == email, MailingList.slug == slug)
            )

    def snapshot(self) -> list[tuple]:
        """Everything consent can change, to prove a request changed nothing."""
        with self.sessions() as s:
            subs = s.execute(select(Subscription.__table__).order_by(Subscription.id)).all()
            people = s.execute(select(Subscriber.id, Subscriber.email, Subscriber.name).order_by(Subscriber.id)).all()
            suppressed = s.execute(select(Suppression.email, Suppression.reason).order_by(Suppression.email)).all()
        return [tuple(r) for r in [*subs, *people, *suppressed]]

    def mails(self, to: str) -> list[EmailMessage]:
        return [message_from_bytes(m.data, policy=policy.default) for m in self.capture.messages if to in m.rcpt_tos]

    def confirm_link(self, to: str) -> str:
        text = body_text(self.mails(to)[-1])
        return must_match(re.search(rf"{re.escape(BASE)}/confirm/\S+", text)).group(0)


@pytest.fixture
def site(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Site]:
    capture = CaptureServer(port=0)
    capture.start()
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BROKER_URL": redis_url,
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{capture.port}",
        "NEWSLETTER_BASE_URL": BASE,
        "NEWSLETTER_SECRET_KEY": KEY,
        "NEWSLETTER_SECRET_KEY_OLD": OLD_KEY,
        "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street, Example City",
    }
    settings = Settings.from_environ(environ)
    engine = db.make_engine(database_url)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as s:
        create_list(
            s,
            "weekly",
            name="The Weekly",
            from_email="news@example.org",
            from_name="Weekly Desk",
            description="Every Friday: what <b>mattered</b>.",
        )
        create_list(s, "daily", name="The Daily", from_email="news@example.org")
    site = Site(settings, sessions, capture, TokenSigner(KEY, [OLD_KEY]))
    site.environ = environ
    yield site
    capture.stop()
    engine.dispose()


def add(site: Site, email: str, slug: str = "weekly", *, confirmed: bool = True, name: str = "") -> None:
    with db.transaction(site.sessions) as s:
        add_subscriber(s, slug, email, name=name, confirmed=confirmed, source="admin")


def assert_secure(response) -> None:
    for header in SECURITY_HEADERS:
        assert header in response.headers, f"{header} missing on {response.request.url}"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none' forbids scripts
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers


# --- subscribe --------------------------------------------------------------------------


def test_home_and_subscribe_form(site):
    client = site.client()
    home = client.get("/")
    assert home.status_code == 200 and "The Weekly" in home.text and 'href="/subscribe/weekly"' in home.text
    page = client.get("/subscribe/weekly")
    assert page.status_code == 200
    assert 'method="post" action="/subscribe/weekly"' in page.text
    assert 'name="email"' in page.text and 'name="name"' in page.text and 'name="website"' in page.text
    assert "Every Friday: what &lt;b&gt;mattered&lt;/b&gt;." in page.text  # list data is escaped too
    assert_secure(page)
    assert client.get("/subscribe/nope").status_code == 404
    assert client.get("/static/site.css").headers["content-type"].startswith("text/css")


def test_subscribing_stores_a_consent_record_and_mails_a_confirmation_link(site):
    client = site.client()
    name = "Ann <b>Lee</b> {{ 7*7 }}"
    answer = client.post(
        "/subscribe/weekly",
        data={"email": " Ann@Example.COM ", "name": name},
        headers={"User-Agent": "TestBrowser/1.0"},
    )
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert_secure(answer)

    sub = site.subscription("ann@example.com")
    assert sub is not None
    assert (sub.status, sub.source, sub.ip, sub.user_agent) == ("unconfirmed", "form", "203.0.113.7", "TestBrowser/1.0")
    assert sub.requested_at is not None and sub.confirmed_at is None

    [mail] = site.mails("ann@example.com")
    assert mail["Subject"] == "Confirm your subscription to The Weekly"
    assert mail["From"] == "Weekly Desk <news@example.org>"
    assert mail["List-Unsubscribe"].startswith(f"<{BASE}/unsubscribe/v1.")
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    link = site.confirm_link("ann@example.com")
    assert link in html and link in text
    assert "Ann &lt;b&gt;Lee&lt;/b&gt; {{ 7*7 }}" in html and "<b>Lee</b>" not in html  # data, never markup or code
    assert f"Hello {name}," in text
    assert "The link works for 7 days." in text
    assert "1 Example Street, Example City" in text and "/unsubscribe/" not in text


def test_the_confirmation_emails_own_unsubscribe_link_declines_the_request(site):
    client = site.client()
    client.post("/subscribe/weekly", data={"email": "ann@example.com"})
    [mail] = site.mails("ann@example.com")
    one_click = must_match(re.match(r"<([^>]+)>", mail["List-Unsubscribe"])).group(1)
    assert client.post(one_click.removeprefix(BASE), data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert site.subscription("ann@example.com").end_reason == "one-click (RFC 8058)"
    declined = client.post(site.confirm_link("ann@example.com").removeprefix(BASE))
    assert declined.status_code == 409 and "after this link was sent" in declined.text


def test_without_redis_the_form_fails_closed_with_503_and_a_crash_is_a_plain_500_page(site):
    client = site.client(NEWSLETTER_BROKER_URL="redis://127.0.0.1:9/0")
    down = client.post("/subscribe/weekly", data={"email": "ann@example.com"})
    assert down.status_code == 503 and "Please try again" in down.text and down.headers["retry-after"]
    assert_secure(down)
    assert site.subscription("ann@example.com") is None

    def broken(request):
        raise RuntimeError("secret internals")

    crash = site.client(send_confirmation=broken).post("/subscribe/weekly", data={"email": "bob@example.com"})
    assert crash.status_code == 500 and "Something went wrong" in crash.text
    assert "secret internals" not in crash.text and "Traceback" not in crash.text
    assert_secure(crash)


def test_pages_live_under_the_path_of_the_base_url(site):
    client = site.client(NEWSLETTER_BASE_URL="https://example.org/news")
    page = client.get("/news/subscribe/weekly")
    assert page.status_code == 200
    assert 'action="/news/subscribe/weekly"' in page.text and 'href="/news/static/site.css"' in page.text
    assert client.get("/news/static/site.css").status_code == 200
    assert client.get("/subscribe/weekly").status_code == 404


def test_invalid_address_or_name_shows_the_form_again_with_400(site):
    client = site.client()
    bad_email = client.post("/subscribe/weekly", data={"email": "not-an-address", "name": "Ann"})
    assert bad_email.status_code == 400
    assert "Please enter a whole email address" in bad_email.text and 'value="not-an-address"' in bad_email.text
    bad_name = client.post("/subscribe/weekly", data={"email": "ann@example.com", "name": "Ann\u0007"})
    assert bad_name.status_code == 400 and "Please check your name" in bad_name.text
    assert client.post("/subscribe/nope", data={"email": "ann@example.com"}).status_code == 404
    assert site.subscription("ann@example.com") is None and site.capture.messages == []


def test_the_answer_never_tells_whether_an_address_is_known(site):
    add(site, "confirmed@example.com", name="Kept Name")
    add(site, "pending@example.com", confirmed=False)
    add(site, "left@example.com")
    with db.transaction(site.sessions) as s:
        suppress(s, "bounced@example.com", reason="hard_bounce")
    site.client().post(f"/unsubscribe/{site.token('left@example.com', 'unsubscribe')}")
    before = site.subscription("confirmed@example.com")
    time.sleep(1.01)  # request times have one-second resolution: ask again after having left

    answers: dict[str, tuple[int, str]] = {}
    for email in (
        "new@example.com",
        "confirmed@example.com",
        "pending@example.com",
        "left@example.com",
        "bounced@example.com",
    ):
        response = site.client(ip=f"198.51.100.{len(answers) + 1}").post(
            "/subscribe/weekly", data={"email": email, "name": "Mallory"}
        )
        answers[email] = (response.status_code, response.text)
    assert len(set(answers.values())) == 1, "the answer differs between known and unknown addresses"

    after = site.subscription("confirmed@example.com")
    assert (after.status, after.source, after.ip, after.requested_at) == (
        before.status,
        before.source,
        before.ip,
        before.requested_at,
    )
    with site.sessions() as s:
        assert s.scalar(select(Subscriber.name).where(Subscriber.email == "confirmed@example.com")) == "Kept Name"
    # Confirmation emails go to the new, the pending and the departed (who may come back);
    # none to a confirmed subscriber or a bounced address.
    assert site.capture.messages and {r for m in site.capture.messages for r in m.rcpt_tos} == {
        "new@example.com",
        "pending@example.com",
        "left@example.com",
    }
    assert site.subscription("left@example.com").status == "unsubscribed"  # until the new request is confirmed
    assert site.subscription("bounced@example.com") is None


def test_a_filled_in_honeypot_gets_the_same_answer_and_stores_nothing(site):
    client = site.client()
    human = client.post("/subscribe/weekly", data={"email": "human@example.com", "name": ""})
    before = site.snapshot()
    bot = client.post(
        "/subscribe/weekly", data={"email": "bot@example.com", "name": "", "website": "http://spam.example"}
    )
    assert (bot.status_code, bot.text) == (human.status_code, human.text)
    assert site.snapshot() == before
    assert site.mails("bot@example.com") == []


def test_per_ip_rate_limit_answers_429_and_stores_nothing(site):
    client = site.client(NEWSLETTER_SUBSCRIBE_LIMIT="3")
    for i in range(3):
        assert client.post("/subscribe/weekly", data={"email": f"reader{i}@example.com"}).status_code == 200
    before = site.snapshot()
    blocked = client.post("/subscribe/weekly", data={"email": "reader3@example.com"})
    assert blocked.status_code == 429
    assert "Too many attempts" in blocked.text
    assert 0 < int(blocked.headers["retry-after"]) <= 3600
    assert_secure(blocked)
    assert site.snapshot() == before and site.mails("reader3@example.com") == []
    # Another address is another client; an IPv6 client is counted by its /64.
    other = site.client(ip="2001:db8:1:2::10", NEWSLETTER_SUBSCRIBE_LIMIT="3")
    neighbour = site.client(ip="2001:db8:1:2:ffff::99", NEWSLETTER_SUBSCRIBE_LIMIT="3")
    assert other.post("/subscribe/weekly", data={"email": "reader3@example.com"}).status_code == 200
    for _ in range(2):
        assert neighbour.post("/subscribe/weekly", data={"email": "reader4@example.com"}).status_code == 200
    assert neighbour.post("/subscribe/weekly", data={"email": "reader5@example.com"}).status_code == 429


def test_one_mailbox_gets_at_most_three_confirmations_a_day_from_any_number_of_clients(site):
    answers = set()
    for i in range(5):
        response = site.client(ip=f"192.0.2.{i + 1}").post("/subscribe/weekly", data={"email": "victim@example.com"})
        answers.add((response.status_code, response.text))
    assert len(answers) == 1
    assert len(site.mails("victim@example.com")) == 3


# --- confirm ---------------------------------------------------------------------------------


def test_confirm_link_shows_a_button_and_only_the_post_confirms(site):
    client = site.client()
    client.post("/subscribe/weekly", data={"email": "ann@example.com", "name": "Ann"})
    path = site.confirm_link("ann@example.com").removeprefix(BASE)

    page = client.get(path)
    assert page.status_code == 200 and "Yes, subscribe me" in page.text
    assert f'<form method="post" action="{path}">' in page.text
    assert_secure(page)
    assert client.head(path).status_code in (200, 405)
    assert site.subscription("ann@example.com").status == "unconfirmed"  # a mail scanner's GET confirms no one

    welcome = client.post(path)
    assert (
        welcome.status_code == 200
        and "Welcome, Ann!" in welcome.text
        and "You're subscribed to The Weekly" in welcome.text
    )
    assert_secure(welcome)
    sub = site.subscription("ann@example.com")
    assert sub.status == "confirmed" and sub.confirmed_at is not None and sub.ip == "203.0.113.7"
    again = client.post(path)
    assert again.status_code == 200 and "already subscribed" in again.text
    assert site.subscription("ann@example.com").confirmed_at == sub.confirmed_at
    assert "already subscribed" in client.get(path).text
    preferences = must_match(re.search(r'href="(/preferences/[^"]+)"', welcome.text)).group(1)
    assert client.get(preferences).status_code == 200


def test_confirm_links_expire_after_the_configured_days(site):
    add(site, "late@example.com", confirmed=False)
    eight_days_ago = int(time.time()) - 8 * 86400
    expired = site.token("late@example.com", "confirm", issued_at=eight_days_ago)
    client = site.client()
    before = site.snapshot()
    for response in (client.get(f"/confirm/{expired}"), client.post(f"/confirm/{expired}")):
        assert response.status_code == 400
        assert "expired" in response.text and 'href="/subscribe/weekly"' in response.text
        assert_secure(response)
    assert site.snapshot() == before
    # NEWSLETTER_CONFIRM_DAYS decides: the same link within 10 days works.
    lenient = site.client(NEWSLETTER_CONFIRM_DAYS="10")
    assert lenient.post(f"/confirm/{expired}").status_code == 200
    assert site.subscription("late@example.com").status == "confirmed"


def test_confirming_after_leaving_everything_comes_back_and_lifts_that_suppression(site):
    add(site, "ann@example.com", "weekly")
    add(site, "ann@example.com", "daily")
    client = site.client()
    old_link = site.token("ann@example.com", "confirm", issued_at=int(time.time()) - 60)
    assert client.post(f"/preferences/{site.token('ann@example.com', 'preferences')}/leave-all").status_code == 200
    with site.sessions() as s:
        assert s.scalar(select(Suppression.reason).where(Suppression.email == "ann@example.com")) == "unsubscribed_all"

    # A link from before leaving never brings anyone back.
    stale = client.post(f"/confirm/{old_link}")
    assert stale.status_code == 409 and "after this link was sent" in stale.text
    assert site.subscription("ann@example.com").status == "unsubscribed"

    time.sleep(1.01)  # request times have one-second resolution: ask again after having left
    client.post("/subscribe/weekly", data={"email": "ann@example.com"})
    sub = site.subscription("ann@example.com")
    assert (sub.status, sub.end_reason) == ("unsubscribed", "leave everything")  # history kept until confirmed
    assert client.post(site.confirm_link("ann@example.com").removeprefix(BASE)).status_code == 200
    sub = site.subscription("ann@example.com")
    assert (sub.status, sub.source, sub.ended_at, sub.end_reason) == ("confirmed", "form", None, None)
    assert site.subscription("ann@example.com", "daily").status == "unsubscribed"
    with site.sessions() as s:
        assert s.scalar(select(Suppression.id).where(Suppression.email == "ann@example.com")) is None


# --- unsubscribe ---------------------------------------------------------------------------


def test_one_click_unsubscribe_is_immediate_200_without_redirect_cookie_or_csrf(site):
    add(site, "ann@example.com")
    add(site, "bob@example.com")
    client = site.client()
    token = site.token("ann@example.com", "unsubscribe")
    response = client.post(
        f"/unsubscribe/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and "unsubscribed" in response.text
    assert_secure(response)
    sub = site.subscription("ann@example.com")
    assert (sub.status, sub.end_reason) == ("unsubscribed", "one-click (RFC 8058)") and sub.ended_at is not None

    # RFC 8058's own example posts multipart/form-data.
    response = client.post(
        f"/unsubscribe/{site.token('bob@example.com', 'unsubscribe')}", files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.status_code == 200
    assert site.subscription("bob@example.com").end_reason == "one-click (RFC 8058)"

    # Twice is fine; the first record stays.
    again = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and site.subscription("ann@example.com").ended_at == sub.ended_at


def test_unsubscribe_get_changes_nothing_and_its_button_unsubscribes(site):
    add(site, "ann@example.com", name="Ann")
    client = site.client()
    token = site.token("ann@example.com", "unsubscribe")
    before = site.snapshot()
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and site.snapshot() == before
    assert f'<form method="post" action="/unsubscribe/{token}">' in page.text
    assert 'href="/preferences/v1.' in page.text and "ann@example.com" in page.text
    assert_secure(page)
    done = client.post(f"/unsubscribe/{token}")
    assert done.status_code == 200
    assert site.subscription("ann@example.com").end_reason == "unsubscribe page"
    assert "You're unsubscribed" in client.get(f"/unsubscribe/{token}").text


def started_send(site: Site, readers: int, subject: str) -> tuple[RenderSettings, int, list[tuple[int, int]]]:
    """``readers`` confirmed readers (reader0@example.com, ...) and a send of a short issue to them, started:
    (the render settings, the send's id, its batches)."""
    for i in range(readers):
        add(site, f"reader{i}@example.com")
    render = RenderSettings.create(base_url=BASE, postal_address="1 Example Street", user_template_dir=None)
    source = IssueSource(subject=subject, preheader="", template="issue", body_markdown="Hello.")
    with db.transaction(site.sessions) as s:
        issue, _ = create_issue(s, "weekly", source, render)
        send, batches = sending.start_send(s, issue.id, render, batch_size=100)
        return render, send.id, batches


def deliver_first_batch(
    site: Site, redis_url: str, render: RenderSettings, send_id: int, batches: list[tuple[int, int]]
) -> batch_loop.BatchResult:
    """Deliver the send's first batch as a worker does, in this process."""
    import redis

    with SmtpTransport(site.settings.smtp) as transport:
        return batch_loop.deliver_batch(
            SqlRecipientStore(site.sessions, send_id, *batches[0]),
            SendEditions(site.sessions, site.signer, render.links),
            transport,
            SendControl(redis.Redis.from_url(redis_url)),
            policy=batch_loop.DeliveryPolicy(),
        )


def test_unsubscribing_takes_effect_for_a_send_in_progress(site, redis_url):
    render, send_id, batches = started_send(site, 3, "Mid-send")
    with site.sessions() as s:
        assert len(s.scalars(select(Delivery.id).where(Delivery.send_id == send_id)).all()) == 3
    # The send has started; one reader leaves before a worker reaches their row.
    assert (
        site.client()
        .post(
            f"/unsubscribe/{site.token('reader1@example.com', 'unsubscribe')}", data={"List-Unsubscribe": "One-Click"}
        )
        .status_code
        == 200
    )
    result = deliver_first_batch(site, redis_url, render, send_id, batches)
    assert (result.sent, result.skipped) == (2, 1)
    assert {r for m in site.capture.messages for r in m.rcpt_tos} == {"reader0@example.com", "reader2@example.com"}


def test_a_delivery_whose_subscriber_row_is_gone_is_skipped_not_left_pending(site, redis_url):
    """deliveries has no foreign keys (migration 0012); a row no subscriber backs is skipped by the claim."""
    render, send_id, batches = started_send(site, 2, "Orphan")
    with db.transaction(site.sessions) as s:
        s.execute(delete(Subscriber).where(Subscriber.email == "reader1@example.com"))
    result = deliver_first_batch(site, redis_url, render, send_id, batches)
    assert (result.sent, result.skipped) == (1, 1)
    assert {r for m in site.capture.messages for r in m.rcpt_tos} == {"reader0@example.com"}
    with site.sessions() as s:
        statuses = s.execute(select(Delivery.email, Delivery.status).order_by(Delivery.id)).all()
    assert statuses == [("reader0@example.com", "sent"), ("reader1@example.com", "skipped")]


def test_outcomes_are_logged_as_the_server_answered_even_with_odd_characters(site):
    """The send log keeps the reply as answered; PostgreSQL's text cannot hold NUL, so that one character is
    dropped (on both stores)."""
    _, send_id, batches = started_send(site, 2, "Replies")
    store = SqlRecipientStore(site.sessions, send_id, *batches[0])
    taken = store.take(60)
    assert taken is not None and len(taken.recipients) == 2
    first, second = taken.recipients
    now = datetime.now(UTC)
    store.record(
        [
            Outcome(first.delivery_id, "sent", 250, 'Ok: queued as "Ä1"\\ \x00end', "<a@x>", sent_at=now),
            Outcome(second.delivery_id, "pending", 451, "4.7.1 try later", "<b@x>", next_attempt_at=now),
        ],
        [],
    )
    with site.sessions() as s:
        logged = s.execute(
            select(
                Delivery.status, Delivery.smtp_code, Delivery.smtp_reply, Delivery.message_id, Delivery.attempts
            ).order_by(Delivery.id)
        ).all()
        sent_at, next_at = s.execute(select(Delivery.sent_at, Delivery.next_attempt_at).order_by(Delivery.id)).all()
    expected_reply = 'Ok: queued as "Ä1"\\ end'
    assert logged == [
        ("sent", 250, expected_reply, "<a@x>", 1),
        ("pending", 451, "4.7.1 try later", "<b@x>", 1),
    ]
    assert sent_at[0] == now and next_at[1] == now and sent_at[1] is None


# --- preferences ---------------------------------------------------------------------------


def test_preferences_show_lists_rename_leave_rejoin_and_leave_everything(site):
    add(site, "ann@example.com", "weekly", name="Ann")
    add(site, "ann@example.com", "daily")
    client = site.client()
    token = site.token("ann@example.com", "preferences")
    base = f"/preferences/{token}"
    before = site.snapshot()
    page = client.get(base)
    assert page.status_code == 200 and site.snapshot() == before
    assert_secure(page)
    assert "ann@example.com" in page.text and "The Weekly" in page.text and "The Daily" in page.text
    assert page.text.count("Subscribed since") == 2

    renamed = client.post(f"{base}/name", data={"name": "<script>alert(1)</script> {{ 7*7 }}"})
    assert renamed.status_code == 200 and "Your name is saved." in renamed.text
    assert "<script>alert(1)</script>" not in renamed.text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt; {{ 7*7 }}"' in renamed.text
    bad = client.post(f"{base}/name", data={"name": "two\nlines"})
    assert bad.status_code == 400 and "Please check your name" in bad.text
    with site.sessions() as s:
        assert (
            s.scalar(select(Subscriber.name).where(Subscriber.email == "ann@example.com"))
            == "<script>alert(1)</script> {{ 7*7 }}"
        )

    left = client.post(f"{base}/leave", data={"list": "daily"})
    assert left.status_code == 200 and "You left The Daily" in left.text and "Join again" in left.text
    assert (
        site.subscription("ann@example.com", "daily").status,
        site.subscription("ann@example.com", "daily").end_reason,
    ) == ("unsubscribed", "preferences")
    assert site.subscription("ann@example.com", "weekly").status == "confirmed"
    assert client.post(f"{base}/leave", data={"list": "nope"}).status_code == 404

    joined = client.post(f"{base}/join", data={"list": "daily"})
    assert joined.status_code == 200 and "Until then you stay off the list" in joined.text
    assert site.subscription("ann@example.com", "daily").status == "unsubscribed"  # double opt-in: not yet
    assert client.post(site.confirm_link("ann@example.com").removeprefix(BASE)).status_code == 200
    daily = site.subscription("ann@example.com", "daily")
    assert (daily.status, daily.source, daily.ended_at) == ("confirmed", "form", None)

    everything = client.post(f"{base}/leave-all")
    assert everything.status_code == 200 and "You left every list" in everything.text
    for slug in ("weekly", "daily"):
        sub = site.subscription("ann@example.com", slug)
        assert (sub.status, sub.end_reason) == ("unsubscribed", "leave everything")
    with site.sessions() as s:
        assert s.scalar(select(Suppression.reason).where(Suppression.email == "ann@example.com")) == "unsubscribed_all"
    assert client.get(base).status_code == 200  # the page keeps working, to join again


def test_a_preferences_link_only_reaches_its_own_subscriber(site):
    add(site, "ann@example.com", "weekly")
    add(site, "bob@example.com", "daily")
    client = site.client()
    token = site.token("ann@example.com", "preferences")
    before = site.snapshot()
    # Bob's list is not Ann's: leaving or joining it through Ann's link finds nothing.
    assert client.post(f"/preferences/{token}/leave", data={"list": "daily"}).status_code == 404
    assert client.post(f"/preferences/{token}/join", data={"list": "daily"}).status_code == 404
    assert site.snapshot() == before


# --- tokens ------------------------------------------------------------------------------------


def _routes(token: str) -> list[tuple[str, str, dict[str, str]]]:
    return [
        ("GET", f"/confirm/{token}", {}),
        ("POST", f"/confirm/{token}", {}),
        ("GET", f"/unsubscribe/{token}", {}),
        ("POST", f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"}),
        ("GET", f"/preferences/{token}", {}),
        ("POST", f"/preferences/{token}/name", {"name": "Hacked"}),
        ("POST", f"/preferences/{token}/leave", {"list": "weekly"}),
        ("POST", f"/preferences/{token}/join", {"list": "weekly"}),
        ("POST", f"/preferences/{token}/leave-all", {}),
    ]


def test_tampered_foreign_or_misused_tokens_get_a_4xx_page_and_change_nothing(site):
    add(site, "ann@example.com", "weekly")
    add(site, "ann@example.com", "daily", confirmed=False)
    add(site, "bob@example.com", "daily")
    ann, weekly = site.ids("ann@example.com")
    bob, daily = site.ids("bob@example.com", "daily")
    client = site.client()
    foreign = TokenSigner("someone-elses-key-123456")
    cases = {}
    for purpose in ("confirm", "unsubscribe", "preferences"):
        good = site.signer.make(ann, weekly, purpose)
        body, signature = good.rsplit(".", 1)
        cases[f"{purpose}: signature altered"] = (
            f"{body}.{signature[:-2]}{'AA' if not signature.endswith('AA') else 'BB'}"
        )
        cases[f"{purpose}: subscriber altered"] = good.replace(f"v1.{ann}.", f"v1.{bob}.", 1)
        cases[f"{purpose}: list altered"] = good.replace(f".{weekly}.", f".{daily}.", 1)
        cases[f"{purpose}: signed with a foreign key"] = foreign.make(ann, weekly, purpose)
        cases[f"{purpose}: truncated"] = good[:-5]
        cases[f"{purpose}: not a token"] = "../../etc/passwd"
        # Well signed, but naming a subscription that does not exist (Bob is not on weekly).
        cases[f"{purpose}: another subscriber's list"] = site.signer.make(bob, weekly, purpose)
    other_purpose = {
        "confirm": site.signer.make(ann, daily, "unsubscribe"),
        "unsubscribe": site.signer.make(ann, weekly, "preferences"),
        "preferences": site.signer.make(ann, weekly, "unsubscribe"),
    }
    before = site.snapshot()
    for name, token in cases.items():
        for method, path, data in _routes(token):
            response = client.request(method, path, data=data or None)
            assert 400 <= response.status_code < 500, f"{name}: {method} {path} -> {response.status_code}"
            assert_secure(response)
    for purpose, token in other_purpose.items():
        for method, path, data in _routes(token):
            if path.split("/")[1] == purpose:
                response = client.request(method, path, data=data or None)
                assert response.status_code == 400, f"{purpose} route took a token made for another purpose"
                assert "not valid" in response.text
    assert site.snapshot() == before


def test_links_signed_with_an_old_key_keep_working_during_a_rotation(site):
    add(site, "ann@example.com")
    subscriber_id, list_id = site.ids("ann@example.com")
    old = TokenSigner(OLD_KEY).make(subscriber_id, list_id, "unsubscribe")
    rotated_out = site.client(NEWSLETTER_SECRET_KEY_OLD="")
    assert rotated_out.get(f"/unsubscribe/{old}").status_code == 400
    assert site.client().post(f"/unsubscribe/{old}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert site.subscription("ann@example.com").status == "unsubscribed"


# --- archive ---------------------------------------------------------------------------------


def _sent_issue(site: Site, subject: str, slug: str = "weekly") -> int:
    render = RenderSettings.create(base_url=BASE, postal_address="1 Example Street", user_template_dir=None)
    source = IssueSource(
        subject=subject,
        preheader="",
        template="issue",
        body_markdown=f"Hello *|NAME:there|*,\n\n# {subject}\n\nBody of *{subject}*.",
    )
    with db.transaction(site.sessions) as s:
        issue, _ = create_issue(s, slug, source, render)
        send, _ = sending.start_send(s, issue.id, render, batch_size=100)
        s.execute(update(Delivery).where(Delivery.send_id == send.id).values(status="sent"))
        return issue.id


def test_archive_lists_sent_issues_newest_first_and_shows_each_without_personal_links(site):
    add(site, "ann@example.com", name="Ann Secret")
    first = _sent_issue(site, "First <edition>")
    time.sleep(0.01)
    second = _sent_issue(site, "Second edition")
    render = RenderSettings.create(base_url=BASE, postal_address="", user_template_dir=None)
    with db.transaction(site.sessions) as s:  # a draft: never sent, not in the archive
        draft, _ = create_issue(
            s, "weekly", IssueSource(subject="Draft", preheader="", template="issue", body_markdown="x"), render
        )
    client = site.client()

    listing = client.get("/archive/weekly")
    assert listing.status_code == 200 and listing.headers["cache-control"] == "public, max-age=300"
    assert_secure(listing)
    assert listing.text.index("Second edition") < listing.text.index("First &lt;edition&gt;")
    assert f'href="/archive/weekly/{first}"' in listing.text and "Draft" not in listing.text

    copy = client.get(f"/archive/weekly/{first}")
    assert copy.status_code == 200
    assert re.search(r"Body of <em[^>]*>First &lt;edition&gt;</em>", copy.text) and "Hello there," in copy.text
    assert "ann@example.com" not in copy.text and "Ann Secret" not in copy.text
    assert "/unsubscribe/" not in copy.text and "/preferences/" not in copy.text
    assert 'href="/subscribe/weekly#manage"' in copy.text
    csp = copy.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert_secure(copy)

    for path in (
        f"/archive/weekly/{draft}",
        f"/archive/daily/{first}",
        "/archive/weekly/abc",
        "/archive/nope",
        f"/archive/weekly/{second}/",
        "/archive/weekly/",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert_secure(response)
    assert client.get("/archive/daily").status_code == 200


def test_no_redirects_and_error_pages_carry_the_headers(site):
    client = site.client()
    for method, path in (
        ("GET", "/nowhere"),
        ("GET", "/%2F%2Fevil.example.org/"),
        ("DELETE", "/subscribe/weekly"),
        ("GET", "/subscribe/weekly/"),
        ("GET", "/unsubscribe/"),
        ("POST", "/archive/weekly"),
    ):
        response = client.request(method, path)
        assert 400 <= response.status_code < 500, (method, path)
        assert response.headers["content-type"].startswith("text/html")
        assert_secure(response)
    # Nothing takes a destination from the request: a "next" parameter is just ignored.
    assert_secure(client.get("/subscribe/weekly?next=https://evil.example.org/"))
    assert_secure(client.post("/subscribe/weekly?next=https://evil.example.org/", data={"email": "a@example.com"}))
