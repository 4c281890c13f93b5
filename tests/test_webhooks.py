"""The provider webhooks over HTTP: Amazon SES through SNS (signatures checked) and the generic JSON form.

SNS messages are signed here with a key and self-signed certificate made for the test;
the app's certificate fetcher is replaced by one serving that certificate for the SNS
URL (the only stand-in: the real fetcher would reach amazonaws.com). Everything else is
the real app on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.feedback.provider_events import CertificateCache
from newsletter.mail.return_path import make_return_path
from subscribers.bounces import recent_events
from tests.bouncekit import KEY, RETURN_PATH, delivery, events, sent_issue, subscription_status, suppression

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
SECRET = "generic-webhook-secret-0123456789"


def _certificate(key: rsa.RSAPrivateKey, name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signing() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, _certificate(key, "sns.amazonaws.com")


def sns(
    key: rsa.RSAPrivateKey,
    kind: str,
    message: str,
    *,
    topic: str = TOPIC,
    version: str = "2",
    cert_url: str = CERT_URL,
    subscribe_url: str = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336",
    published: datetime | None = None,
) -> dict[str, str]:
    """An SNS POST body signed as SNS signs it (canonical string of the type's fields), published now unless told."""
    when = (published or datetime.now(UTC)).astimezone(UTC)
    doc = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message,
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if kind == "Notification":
        fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        doc["UnsubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"
    else:
        fields = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        doc.update(Token="2336412f37fb687f5d51e6e2425f004a", SubscribeURL=subscribe_url)
    canonical = "".join(f"{f}\n{doc[f]}\n" for f in fields if f in doc)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    doc["Signature"] = base64.b64encode(key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)).decode()
    return doc


def ses_bounce(email: str, bounce_type: str, *, source: str = "news@example.org", message_id: str | None = None) -> str:
    mail = {
        "timestamp": "2026-11-27T10:15:04.000Z",
        "source": source,
        "messageId": "0102018c-ses-id-000000",
        "destination": [email],
        "headersTruncated": False,
        "headers": [{"name": "Message-ID", "value": message_id}] if message_id else [],
    }
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": bounce_type,
                "bounceSubType": "General" if bounce_type == "Permanent" else "MailboxFull",
                "bouncedRecipients": [
                    {
                        "emailAddress": email,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": "2026-11-27T10:15:06.477Z",
                "feedbackId": f"0102018c-{uuid.uuid4()}",
            },
            "mail": mail,
        }
    )


def ses_delivery_delay(email: str, *, source: str = "news@example.org", message_id: str | None = None) -> str:
    """An SES event-publishing DeliveryDelay record (what a configuration set's SNS destination gets)."""
    return json.dumps(
        {
            "eventType": "DeliveryDelay",
            "mail": {
                "timestamp": "2026-11-27T10:15:04.000Z",
                "source": source,
                "messageId": "0102018c-ses-id-000002",
                "destination": [email],
                "headersTruncated": False,
                "headers": [{"name": "Message-ID", "value": message_id}] if message_id else [],
            },
            "deliveryDelay": {
                "timestamp": "2026-11-27T10:25:40.641Z",
                "delayType": "MailboxFull",
                "expirationTime": "2026-11-27T23:15:04.914Z",
                "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
                "delayedRecipients": [
                    {"emailAddress": email, "status": "4.2.2", "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}
                ],
            },
        }
    )


def ses_complaint(email: str, source: str, feedback_type: str = "abuse") -> str:
    return json.dumps(
        {
            "notificationType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": email}],
                "complaintFeedbackType": feedback_type,
                "timestamp": "2026-11-27T18:02:40.000Z",
                "feedbackId": f"0102018c-{uuid.uuid4()}",
            },
            "mail": {"source": source, "destination": [email], "messageId": "0102018c-ses-id-000001"},
        }
    )


@dataclass
class Hooks:
    sessions: sessionmaker[Session]
    environ: dict[str, str]
    certificate: bytes
    fetched: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)

    def client(self, **overrides: str):
        from fastapi.testclient import TestClient

        from newsletter.http.app import create_app

        environ = {k: v for k, v in {**self.environ, **overrides}.items() if v is not None}
        app = create_app(Settings.from_environ(environ), sessions=self.sessions, send_confirmation=lambda request: None)

        def fetch(url: str) -> bytes:
            self.fetched.append(url)
            if url != CERT_URL:
                raise OSError(f"nothing at {url}")
            return self.certificate

        app.state.sns_certificates = CertificateCache(fetch)
        app.state.sns_open_url = self.opened.append
        return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def hooks(tmp_path: Path, sessions: sessionmaker[Session], database_url: str, signing) -> Iterator[Hooks]:
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BASE_URL": "https://news.example.org",
        "NEWSLETTER_SECRET_KEY": KEY,
        "NEWSLETTER_RETURN_PATH": RETURN_PATH,
        "NEWSLETTER_SES_TOPIC_ARNS": f"arn:aws:sns:us-east-1:123456789012:other, {TOPIC}",
        "NEWSLETTER_WEBHOOK_SECRET": SECRET,
    }
    yield Hooks(sessions, environ, signing[1])


# --- Amazon SES through SNS -------------------------------------------------------------


def test_a_signed_permanent_bounce_suppresses_and_an_sns_retry_counts_once(hooks, signing):
    ann = sent_issue(hooks.sessions, ["ann@example.com", "bob@example.com"])["ann@example.com"]
    source = make_return_path(RETURN_PATH, ann.delivery_id, KEY)
    body = sns(signing[0], "Notification", ses_bounce("ann@example.com", "Permanent", source=source))
    client = hooks.client()
    response = client.post(
        "/webhooks/ses", content=json.dumps(body), headers={"content-type": "text/plain; charset=UTF-8"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["events"] == [
        {
            "email": "ann@example.com",
            "kind": "hard",
            "delivery_id": ann.delivery_id,
            "repeated": False,
            "proven": True,
            "suppressed": "hard_bounce",
            "unsubscribed": [],
        }
    ]
    assert delivery(hooks.sessions, ann.delivery_id).status == "bounced"
    assert suppression(hooks.sessions, "ann@example.com") == "hard_bounce"
    assert suppression(hooks.sessions, "bob@example.com") is None

    again = client.post("/webhooks/ses", content=json.dumps(body))  # SNS delivers at least once
    assert again.status_code == 200 and again.json()["events"][0]["repeated"] is True
    assert events(hooks.sessions) == [("ann@example.com", "hard", ann.delivery_id)]
    assert hooks.fetched == [CERT_URL]  # the certificate is fetched once and cached


def test_signature_version_1_and_a_transient_bounce_found_by_message_id(hooks, signing):
    cat = sent_issue(hooks.sessions, ["cat@example.com"])["cat@example.com"]
    body = sns(
        signing[0], "Notification", ses_bounce("cat@example.com", "Transient", message_id=cat.message_id), version="1"
    )
    response = hooks.client().post("/webhooks/ses", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["events"][0]["kind"] == "soft"
    assert events(hooks.sessions) == [("cat@example.com", "soft", cat.delivery_id)]
    assert suppression(hooks.sessions, "cat@example.com") is None


def test_an_ses_delivery_delay_is_recorded_and_changes_nothing_and_a_retry_counts_once(hooks, signing):
    gil = sent_issue(hooks.sessions, ["gil@example.com"])["gil@example.com"]
    source = make_return_path(RETURN_PATH, gil.delivery_id, KEY)
    client = hooks.client()
    body = sns(signing[0], "Notification", ses_delivery_delay("gil@example.com", source=source))
    response = client.post("/webhooks/ses", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "received": 1,
        "events": [
            {
                "email": "gil@example.com",
                "kind": "delayed",
                "delivery_id": gil.delivery_id,
                "repeated": False,
                "proven": True,
                "suppressed": None,
                "unsubscribed": [],
            }
        ],
    }
    assert client.post("/webhooks/ses", json=body).json()["events"][0]["repeated"] is True
    # Another message of the same delay, found by its Message-ID: a repeat too (one delay per delivery).
    by_id = sns(signing[0], "Notification", ses_delivery_delay("gil@example.com", message_id=gil.message_id))
    assert client.post("/webhooks/ses", json=by_id).json()["events"][0]["repeated"] is True
    assert events(hooks.sessions) == [("gil@example.com", "delayed", gil.delivery_id)]
    assert delivery(hooks.sessions, gil.delivery_id).status == "sent"
    assert suppression(hooks.sessions, "gil@example.com") is None
    assert subscription_status(hooks.sessions, "gil@example.com")[0] == "confirmed"
    with hooks.sessions() as s:
        [row] = recent_events(s, kind="delayed")
    assert row.source == "ses"
    assert row.detail == (
        "SES delay/MailboxFull 4.2.2 smtp; 452 4.2.2 mailbox full, retried until 2026-11-27T23:15:04.914Z"
    )

    # When SES gives up, it sends a Transient bounce: a soft bounce, which does bounce the delivery.
    bounce = sns(signing[0], "Notification", ses_bounce("gil@example.com", "Transient", source=source))
    assert client.post("/webhooks/ses", json=bounce).json()["events"][0]["kind"] == "soft"
    assert delivery(hooks.sessions, gil.delivery_id).status == "bounced"


def test_a_malformed_ses_delivery_delay_is_refused_naming_the_field(hooks, signing):
    record = json.loads(ses_delivery_delay("gil@example.com"))
    record["deliveryDelay"]["delayedRecipients"].append({"emailAddress": "not an address"})
    response = hooks.client().post("/webhooks/ses", json=sns(signing[0], "Notification", json.dumps(record)))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "deliveryDelay.delayedRecipients[1].emailAddress"
    record["deliveryDelay"] = "soon"
    response = hooks.client().post("/webhooks/ses", json=sns(signing[0], "Notification", json.dumps(record)))
    assert response.status_code == 400 and response.json()["error"]["field"] == "deliveryDelay"
    assert events(hooks.sessions) == []


def test_a_complaint_unsubscribes_and_suppresses_and_not_spam_does_nothing(hooks, signing):
    dee = sent_issue(hooks.sessions, ["dee@example.com"], slug="weekly")["dee@example.com"]
    sent_issue(hooks.sessions, ["dee@example.com"], slug="daily")
    client = hooks.client()
    source = make_return_path(RETURN_PATH, dee.delivery_id, KEY)
    assert client.post(
        "/webhooks/ses", json=sns(signing[0], "Notification", ses_complaint("dee@example.com", source, "not-spam"))
    ).json() == {
        "received": 0,
        "events": [],
    }
    response = client.post(
        "/webhooks/ses", json=sns(signing[0], "Notification", ses_complaint("dee@example.com", source))
    )
    assert response.status_code == 200
    assert response.json()["events"][0]["unsubscribed"] == ["weekly"]
    assert subscription_status(hooks.sessions, "dee@example.com", "weekly")[0] == "unsubscribed"
    assert subscription_status(hooks.sessions, "dee@example.com", "daily")[0] == "confirmed"
    assert suppression(hooks.sessions, "dee@example.com") == "complaint"


def test_a_verp_source_for_someone_elses_address_does_not_name_that_delivery(hooks, signing):
    sent = sent_issue(hooks.sessions, ["eve@example.com", "fox@example.com"])
    source = make_return_path(RETURN_PATH, sent["eve@example.com"].delivery_id, KEY)
    response = hooks.client().post(
        "/webhooks/ses", json=sns(signing[0], "Notification", ses_bounce("fox@example.com", "Permanent", source=source))
    )
    assert response.json()["events"][0]["delivery_id"] is None
    assert response.json()["events"][0]["proven"] is False
    assert delivery(hooks.sessions, sent["eve@example.com"].delivery_id).status == "sent"
    assert (
        suppression(hooks.sessions, "fox@example.com") is None
        and suppression(hooks.sessions, "eve@example.com") is None
    )


@pytest.mark.parametrize(
    "tamper",
    ["message", "other key", "wrong topic", "http url", "foreign host", "lookalike host", "not a pem", "version 3"],
)
def test_forged_or_foreign_sns_messages_are_refused_with_403_and_change_nothing(hooks, signing, tamper):
    ann = sent_issue(hooks.sessions, ["ann@example.com"])["ann@example.com"]
    message = ses_bounce("ann@example.com", "Permanent", message_id=ann.message_id)
    key = signing[0]
    options: dict[str, Any] = {}
    if tamper == "other key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif tamper == "wrong topic":
        options["topic"] = "arn:aws:sns:eu-west-1:999999999999:someone-elses"
    elif tamper == "http url":
        options["cert_url"] = CERT_URL.replace("https://", "http://")
    elif tamper == "foreign host":
        options["cert_url"] = "https://attacker.example/SimpleNotificationService.pem"
    elif tamper == "lookalike host":
        options["cert_url"] = "https://sns.eu-west-1.amazonaws.com.attacker.example/cert.pem"
    elif tamper == "not a pem":
        options["cert_url"] = "https://sns.eu-west-1.amazonaws.com/cert.txt"
    elif tamper == "version 3":
        options["version"] = "3"
    body = sns(key, "Notification", message, **options)
    if tamper == "message":
        body["Message"] = ses_bounce("bob@example.com", "Permanent")
    response = hooks.client().post("/webhooks/ses", json=body)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["status"] == 403
    assert events(hooks.sessions) == []
    assert (
        suppression(hooks.sessions, "ann@example.com") is None
        and suppression(hooks.sessions, "bob@example.com") is None
    )
    if tamper in ("wrong topic", "http url", "foreign host", "lookalike host", "not a pem"):
        assert hooks.fetched == []  # refused before any certificate is fetched


def test_a_subscription_is_confirmed_only_for_an_allowed_topic_and_an_sns_url(hooks, signing):
    client = hooks.client()
    good = sns(signing[0], "SubscriptionConfirmation", "You have chosen to subscribe to the topic.")
    response = client.post("/webhooks/ses", json=good)
    assert response.status_code == 200 and response.json() == {"confirmed": TOPIC}
    assert hooks.opened == [good["SubscribeURL"]]
    foreign = sns(signing[0], "SubscriptionConfirmation", "subscribe", topic="arn:aws:sns:eu-west-1:999999999999:x")
    assert client.post("/webhooks/ses", json=foreign).status_code == 403
    sneaky = sns(signing[0], "SubscriptionConfirmation", "subscribe", subscribe_url="https://attacker.example/confirm")
    assert client.post("/webhooks/ses", json=sneaky).status_code == 403
    assert hooks.opened == [good["SubscribeURL"]]
    unsubscribed = sns(signing[0], "UnsubscribeConfirmation", "unsubscribed")
    assert client.post("/webhooks/ses", json=unsubscribed).json() == {"ignored": "UnsubscribeConfirmation"}


def test_the_ses_webhook_is_off_without_topics_and_rejects_non_sns_bodies(hooks):
    off = hooks.client(NEWSLETTER_SES_TOPIC_ARNS="")
    assert off.post("/webhooks/ses", json={"Type": "Notification"}).status_code == 404
    client = hooks.client()
    response = client.post("/webhooks/ses", content=b"not json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "body"
    assert client.post("/webhooks/ses", json={"Type": "Something"}).status_code == 400


# --- the generic JSON form ----------------------------------------------------------------


def test_the_generic_webhook_needs_the_bearer_secret(hooks):
    gus = sent_issue(hooks.sessions, ["gus@example.com"])["gus@example.com"]
    client = hooks.client()
    batch = {
        "events": [{"type": "bounce", "email": "gus@example.com", "bounce_type": "hard", "message_id": gus.message_id}]
    }
    missing = client.post("/webhooks/events", json=batch)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/webhooks/events", json=batch, headers={"Authorization": f"Bearer {SECRET}x"})
    assert wrong.status_code == 401 and wrong.json()["error"]["status"] == 401
    assert client.post("/webhooks/events", json=batch, headers={"Authorization": f"Basic {SECRET}"}).status_code == 401
    assert events(hooks.sessions) == []
    off = hooks.client(NEWSLETTER_WEBHOOK_SECRET="")
    assert off.post("/webhooks/events", json=batch, headers={"Authorization": f"Bearer {SECRET}"}).status_code == 404
    ok = client.post("/webhooks/events", json=batch, headers={"Authorization": f"Bearer {SECRET}"})
    assert ok.status_code == 200 and ok.json()["events"][0]["suppressed"] == "hard_bounce"


def test_generic_events_bounce_complain_and_unsubscribe(hooks):
    sent = sent_issue(hooks.sessions, ["hal@example.com", "ida@example.com", "jay@example.com"], slug="weekly")
    sent_issue(hooks.sessions, ["jay@example.com"], slug="daily")
    batch = {
        "events": [
            {
                "type": "bounce",
                "email": "hal@example.com",
                "bounce_type": "hard",
                "message_id": sent["hal@example.com"].message_id,
                "detail": "550 5.1.1 user unknown",
            },
            {
                "type": "bounce",
                "email": "ida@example.com",
                "bounce_type": "soft",
                "detail": "mailbox full",
                "return_path": make_return_path(RETURN_PATH, sent["ida@example.com"].delivery_id, KEY),
            },
            {"type": "complaint", "email": "ida@example.com", "message_id": sent["ida@example.com"].message_id},
            {"type": "unsubscribe", "email": "jay@example.com", "message_id": sent["jay@example.com"].message_id},
        ]
    }
    response = hooks.client().post("/webhooks/events", json=batch, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 200, response.text
    assert response.json()["received"] == 4
    assert [e["kind"] for e in response.json()["events"]] == ["hard", "soft", "complaint", "unsubscribe"]
    assert delivery(hooks.sessions, sent["hal@example.com"].delivery_id).status == "bounced"
    assert suppression(hooks.sessions, "hal@example.com") == "hard_bounce"
    assert suppression(hooks.sessions, "ida@example.com") == "complaint"
    assert subscription_status(hooks.sessions, "ida@example.com")[0] == "unsubscribed"
    assert subscription_status(hooks.sessions, "jay@example.com", "weekly") == (
        "unsubscribed",
        "unsubscribe reported by the mail provider",
    )
    assert subscription_status(hooks.sessions, "jay@example.com", "daily")[0] == "confirmed"
    assert suppression(hooks.sessions, "jay@example.com") is None


def test_a_generic_delayed_event_is_recorded_and_changes_nothing(hooks):
    sent = sent_issue(hooks.sessions, ["kit@example.com", "lou@example.com"])
    kit = sent["kit@example.com"]
    batch = {
        "events": [
            {
                "type": "delayed",
                "email": "kit@example.com",
                "return_path": make_return_path(RETURN_PATH, kit.delivery_id, KEY),
                "detail": "deferred: 421 4.7.0 try again later",
            },
            {"type": "delayed", "email": "lou@example.com", "message_id": sent["lou@example.com"].message_id},
            {"type": "delayed", "email": "kit@example.com", "message_id": kit.message_id},  # the same delivery again
            {"type": "delayed", "email": "max@example.com"},  # no proof of a message of ours: kept for review
        ]
    }
    client = hooks.client()
    response = client.post("/webhooks/events", json=batch, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 200, response.text
    assert [
        (e["email"], e["kind"], e["delivery_id"], e["repeated"], e["suppressed"], e["unsubscribed"])
        for e in response.json()["events"]
    ] == [
        ("kit@example.com", "delayed", kit.delivery_id, False, None, []),
        ("lou@example.com", "delayed", sent["lou@example.com"].delivery_id, False, None, []),
        ("kit@example.com", "delayed", kit.delivery_id, True, None, []),
        ("max@example.com", "delayed", None, False, None, []),
    ]
    assert [e[1] for e in events(hooks.sessions)] == ["delayed"] * 3
    for s in sent.values():
        assert delivery(hooks.sessions, s.delivery_id).status == "sent"
        assert suppression(hooks.sessions, s.email) is None
        assert subscription_status(hooks.sessions, s.email)[0] == "confirmed"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "bounce", "email": "not-an-address", "bounce_type": "hard"}, "events[1].email"),
        ({"type": "bounce", "email": "kai@example.com", "bounce_type": "delayed"}, "events[1].bounce_type"),
        ({"type": "delayed", "email": "kai@example.com", "detail": ["4.4.1"]}, "events[1].detail"),
        ({"type": "bounce", "email": "kai@example.com"}, "events[1].bounce_type"),
        ({"type": "delivered", "email": "kai@example.com"}, "events[1].type"),
        ({"type": "complaint", "email": "kai@example.com", "bounceType": "hard"}, "events[1].bounceType"),
        ({"type": "complaint", "email": "kai@example.com", "detail": 5}, "events[1].detail"),
    ],
)
def test_a_bad_generic_batch_is_refused_whole_naming_the_field(hooks, event, field):
    batch = {"events": [{"type": "complaint", "email": "lee@example.com"}, event]}
    response = hooks.client().post("/webhooks/events", json=batch, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert events(hooks.sessions) == []  # the good first event was not applied either
    assert suppression(hooks.sessions, "lee@example.com") is None
