"""Shared by the bounce tests: a list with a sent issue in a real database, and the sample bounce messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.content.issue_files import read_issue_file
from newsletter.content.issues import RenderSettings, create_issue
from newsletter.delivery import sending
from newsletter.store import db
from newsletter.store.models import BounceEvent, Delivery, MailingList, Subscriber, Subscription, Suppression, utcnow
from subscribers.lists import create_list
from subscribers.subscriptions import add_subscriber
from subscribers.tokens import TokenSigner
from tests.sendkit import SAMPLE_ISSUE

MAIL_DIR = Path(__file__).resolve().parent / "mail"
KEY = "bounce-test-secret-key-0123456789"
RETURN_PATH = "bounces@example.org"
RENDER = RenderSettings.create(
    base_url="https://news.example.org", postal_address="1 Example Street", user_template_dir=None
)


@dataclass(frozen=True)
class Sent:
    """One recipient of a send that went out: its delivery and the Message-ID it carried."""

    email: str
    delivery_id: int
    message_id: str
    list_id: int


def sent_issue(sessions: sessionmaker[Session], emails: list[str], *, slug: str = "weekly") -> dict[str, Sent]:
    """Subscribe ``emails`` to ``slug`` (created if new), send the sample issue, and log every delivery as sent."""
    with db.transaction(sessions) as s:
        if s.scalar(select(MailingList.id).where(MailingList.slug == slug)) is None:
            create_list(s, slug, name=f"The {slug.title()}", from_email="news@example.org")
        for email in emails:
            add_subscriber(s, slug, email, confirmed=True, source="admin")
        issue, _ = create_issue(s, slug, read_issue_file(SAMPLE_ISSUE), RENDER)
        send, _ = sending.start_send(s, issue.id, RENDER, batch_size=1000)
        # As the workers make it: each Message-ID carries a MAC of its delivery id.
        message = sending.compile_message(s, send, message_id_key=TokenSigner(KEY).derived_key("message-id"))
        rows = s.execute(select(Delivery.id, Delivery.email).where(Delivery.send_id == send.id)).all()
        now = utcnow()
        sent = {}
        for delivery_id, email in rows:
            message_id = message.message_id(delivery_id)
            s.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(
                    status="sent",
                    attempts=1,
                    smtp_code=250,
                    smtp_reply="2.0.0 OK: queued as 4Yc3",
                    message_id=message_id,
                    sent_at=now,
                )
            )
            sent[email] = Sent(email, delivery_id, message_id, send.list_id)
    return {e: sent[e] for e in emails if e in sent}


def sample(name: str, **values: str) -> bytes:
    """A message of tests/mail/ with its $placeholders filled in, with CRLF line ends as on the wire."""
    values.setdefault("report_id", "report-1@mx1.example.net")
    text = Template((MAIL_DIR / name).read_text(encoding="utf-8")).substitute(values)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def delivery(sessions: sessionmaker[Session], delivery_id: int) -> Delivery:
    with sessions() as s:
        row = s.get(Delivery, delivery_id)
        assert row is not None
        return row


def suppression(sessions: sessionmaker[Session], email: str) -> str | None:
    with sessions() as s:
        return s.scalar(select(Suppression.reason).where(Suppression.email == email))


def events(sessions: sessionmaker[Session], email: str | None = None) -> list[tuple[str, str, int | None]]:
    """(email, kind, delivery_id) of the stored events, oldest first."""
    with sessions() as s:
        query = select(BounceEvent.email, BounceEvent.kind, BounceEvent.delivery_id).order_by(BounceEvent.id)
        if email is not None:
            query = query.where(BounceEvent.email == email)
        return [(address, kind, delivery_id) for address, kind, delivery_id in s.execute(query)]


def subscription_status(sessions: sessionmaker[Session], email: str, slug: str = "weekly") -> tuple[str, str | None]:
    with sessions() as s:
        row = s.execute(
            select(Subscription.status, Subscription.end_reason)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .join(MailingList, MailingList.id == Subscription.list_id)
            .where(Subscriber.email == email, MailingList.slug == slug)
        ).one()
        return row[0], row[1]
