"""Wire-format messages: standards, personalisation and speed-relevant invariants (pure, no services)."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from newsletter.content.issue_files import read_issue_file
from newsletter.content.rendering import PersonalFields, RenderContext, default_template_dir, personalise, render_issue
from newsletter.errors import InvalidInput
from newsletter.mail.messages import CompiledMessage, MessageHeaders, Recipient, ascii_address
from tests.textkit import body_text

ROOT = Path(__file__).resolve().parent.parent
RENDERED = render_issue(
    read_issue_file(ROOT / "examples" / "issues" / "this-week-in-info-war.md"),
    RenderContext("Info War Weekly", "weekly", "Info War", "1 Example Street", "https://news.example.org"),
    template_dirs=[default_template_dir()],
)
HEADERS = MessageHeaders(
    subject=RENDERED.subject,
    from_email="news@example.org",
    from_name="Info Wär",
    reply_to="editor@example.org",
    list_name="Info War Weekly",
    list_slug="weekly",
    message_id_tag="7.abc",
)


def recipient(name: str = "Ann Lee", address: str = "ann@example.com", n: int = 1) -> Recipient:
    return Recipient(
        delivery_id=n,
        email=address,
        name=name,
        unsubscribe_url=f"https://news.example.org/unsubscribe/v1.{n}.2.3.sig",
        preferences_url=f"https://news.example.org/preferences/v1.{n}.2.3.sig",
        unsubscribe_mailto=f"mailto:unsubscribe+v1.{n}.2.3.sig@example.org?subject=unsubscribe",
        view_online_url="https://news.example.org/archive/weekly/1",
    )


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.mark.parametrize(
    "name", ["Ann Lee", "", "{{ 7*7 }}", "<script>alert(1)</script> & Co", ("Zoë Weiß-Łukasz " * 8).strip(), ".dot"]
)
def test_every_copy_decodes_to_exactly_the_personalised_issue(name):
    message = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text)
    r = recipient(name)
    message_id, data = message.build(r)
    lines = data.split(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in lines) <= 78  # QP bodies within 76, headers folded
    assert not any(line.startswith(b".") for line in lines)  # safe to send without dot-stuffing
    parsed = parse(data)
    html, text = personalise(
        RENDERED.html,
        RENDERED.text,
        PersonalFields(r.name, r.email, r.unsubscribe_url, r.preferences_url, r.view_online_url),
    )
    assert body_text(parsed).replace("\r\n", "\n") == text
    assert body_text(parsed, "html").replace("\r\n", "\n") == html
    # The sample's greeting, "Hello *|NAME:there|*,", as written for this recipient.
    assert f"\nHello {name or 'there'},\n" in text
    assert parsed["Message-ID"] == message_id == "<1.7.abc@example.org>"
    # RFC 2047 decoding (the legacy decoder: the modern parser puts spaces between split words).
    raw_to = data.split(b"\r\nTo: ", 1)[1].split(b"\r\nDate:", 1)[0].decode()
    expected = f"{name.strip()} <ann@example.com>" if name.strip() else "ann@example.com"
    assert str(make_header(decode_header(raw_to))).replace('"', "").replace("\\", "") == expected.replace('"', "")


def test_headers_meet_the_bulk_sender_rules():
    message = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text)
    _, data = message.build(recipient())
    parsed = parse(data)
    assert parsed["From"] == "Info Wär <news@example.org>"
    assert parsed["Reply-To"] == "editor@example.org"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["List-Id"] == '"Info War Weekly" <weekly.example.org>'
    assert parsed["List-Unsubscribe"] == (
        "<https://news.example.org/unsubscribe/v1.1.2.3.sig>, "
        "<mailto:unsubscribe+v1.1.2.3.sig@example.org?subject=unsubscribe>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Date"].datetime.utcoffset().total_seconds() == 0 and b"+0000" in data
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parsed.iter_parts())
    assert message.envelope_from == "news@example.org"


def test_copies_differ_only_in_personal_parts():
    message = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text)
    _, one = message.build(recipient("Ann", "ann@example.com", 1))
    _, two = message.build(recipient("Bob", "bob@example.com", 2))
    assert one != two and b"Bob" not in one and b"Ann" not in two


def test_header_injection_is_refused():
    for field in ("subject", "from_name", "list_name"):
        bad = MessageHeaders(**{**HEADERS.__dict__, field: "Hello\r\nBcc: victim@example.com"})
        with pytest.raises(InvalidInput, match="line break"):
            CompiledMessage(bad, RENDERED.html, RENDERED.text)


def test_internationalised_domains_go_out_in_ascii():
    assert ascii_address("ann@bücher.de") == "ann@xn--bcher-kva.de"
    message = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text)
    _, data = message.build(recipient("Ann", "ann@bücher.de"))
    assert b"To: Ann <ann@xn--bcher-kva.de>" in data


def test_a_keyed_message_id_cannot_be_derived_from_a_neighbours():
    keyed = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text, message_id_key=b"k" * 32)
    again = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text, message_id_key=b"k" * 32)
    other_key = CompiledMessage(HEADERS, RENDERED.html, RENDERED.text, message_id_key=b"j" * 32)
    one, two = keyed.message_id(1), keyed.message_id(2)
    assert one.startswith("<1.7.abc.") and one.endswith("@example.org>")
    assert one == again.message_id(1) != other_key.message_id(1)  # the same on every worker, for one key
    assert two != one.replace("<1.", "<2.", 1)
    message_id, data = keyed.build(recipient(n=1))
    assert message_id == one and parse(data)["Message-ID"] == one
