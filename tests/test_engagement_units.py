"""Engagement tracking's pure parts: finding and rewriting links, telling machines from people, tallying."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.content.rendering import PersonalFields, personalise, placeholder
from newsletter.engagement.links import find_links, track
from newsletter.engagement.machines import ProxyRanges, is_machine_click, is_machine_open
from newsletter.engagement.tally import tally
from newsletter.store.states import EngagementKind, EngagementOrigin
from subscribers.tokens import TokenSigner

BASE = "https://news.example.org"
UNSUBSCRIBE = placeholder("unsubscribe_url")
HTML = (
    "<html><body>"
    '<a href="https://example.com/a?x=1&amp;y=2">A</a> '
    '<a class="b" href="https://example.com/b">B</a> '
    '<a href="https://example.com/a?x=1&amp;y=2">A again</a> '
    '<a href="mailto:editor@example.org">write</a> <a href="#top">top</a> '
    f'<a href="{UNSUBSCRIBE}">Unsubscribe</a>'
    "</body></html>"
)
TEXT = "Read A [1] and B [2].\n\n[1] https://example.com/a?x=1&y=2\n[2] https://example.com/b.\n" + UNSUBSCRIBE
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def test_links_are_numbered_once_each_in_order_and_personal_or_local_ones_are_left_alone():
    assert find_links(HTML) == ["https://example.com/a?x=1&y=2", "https://example.com/b"]


def test_tracked_copies_point_every_link_to_its_redirect_and_carry_the_open_image():
    urls = find_links(HTML)
    html, text = track(HTML, TEXT, BASE, 7, urls)
    fields = PersonalFields("Ann", "ann@example.com", "https://u/1", "https://p/1", "https://v/1", tracking="42.sig")
    html, text = personalise(html, text, fields)
    assert html.count(f'href="{BASE}/t/c/7/1/42.sig"') == 2
    assert f'class="b" href="{BASE}/t/c/7/2/42.sig"' in html
    assert 'href="mailto:editor@example.org"' in html and 'href="#top"' in html
    assert 'href="https://u/1"' in html  # the unsubscribe link is not tracked
    assert html.index(f'<img src="{BASE}/t/o/7/42.sig" width="1" height="1"') < html.index("</body>")
    assert "example.com" not in html
    assert f"[1] {BASE}/t/c/7/1/42.sig\n[2] {BASE}/t/c/7/2/42.sig.\n" in text  # the full stop stays out
    assert text.endswith("https://u/1")


def test_a_tracking_token_names_its_delivery_for_its_send_only():
    signer = TokenSigner("k" * 40, old_keys=["o" * 40])
    token = signer.tracking_token(7, 42)
    assert signer.tracked_delivery(7, token) == 42
    assert signer.tracked_delivery(8, token) is None  # another send
    _, _, signature = token.partition(".")
    assert signer.tracked_delivery(7, f"43.{signature}") is None  # another delivery
    assert signer.tracked_delivery(7, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    for junk in ("", "42", "42.", ".abc", "x.abc", "4\u0662.abc", "1" * 30 + ".abc"):
        assert signer.tracked_delivery(7, junk) is None
    old = TokenSigner("o" * 40).tracking_token(7, 42)
    assert signer.tracked_delivery(7, old) == 42  # links of mail sent before a key rotation keep counting


@pytest.mark.parametrize(
    ("agent", "machine"),
    [
        (CHROME, False),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", False),
        ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", False),
        ("Mozilla/5.0", True),  # Apple Mail Privacy Protection
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", True),
        ("", True),
        (None, True),
    ],
)
def test_opens_from_privacy_proxies_and_prefetchers_are_machine_opens(agent, machine):
    assert is_machine_open(agent, "203.0.113.9") is machine


def test_opens_from_a_published_proxy_range_are_machine_opens(tmp_path: Path):
    path = tmp_path / "egress-ip-ranges.csv"
    path.write_text("172.224.224.0/27,GB,GB-EN,London,\n# a comment\n\n2a02:26f7:b3c0:4000::/64,GB,,,\n")
    ranges = ProxyRanges.from_file(path)
    assert len(ranges) == 2
    assert is_machine_open(CHROME, "172.224.224.17", ranges)
    assert is_machine_open(CHROME, "2a02:26f7:b3c0:4000::1", ranges)
    assert not is_machine_open(CHROME, "172.224.224.32", ranges)
    assert not is_machine_open(CHROME, "not an address", ranges)
    path.write_text("172.224.224.0/27\n300.1.1.1/8\n")
    with pytest.raises(ValueError, match=r"egress-ip-ranges.csv, line 2"):
        ProxyRanges.from_file(path)


@pytest.mark.parametrize(
    ("method", "agent", "machine"),
    [
        ("GET", CHROME, False),
        ("HEAD", CHROME, True),
        ("GET", "Mozilla/5.0 (compatible; Barracuda Sentinel)", True),
        ("GET", "python-requests/2.32", True),
        ("GET", "Mozilla/5.0 (compatible; bingbot/2.0)", True),
        ("GET", None, True),
    ],
)
def test_head_requests_and_scanners_are_machine_clicks(method, agent, machine):
    assert is_machine_click(method, agent) is machine


T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OPEN, CLICK = EngagementKind.OPEN, EngagementKind.CLICK
HUMAN, MACHINE = EngagementOrigin.HUMAN, EngagementOrigin.MACHINE


def test_a_tally_counts_readers_once_and_tells_bursts_of_clicks_apart():
    seconds = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    events = [
        ("a", OPEN, None, HUMAN, seconds(0)),
        ("a", OPEN, None, HUMAN, seconds(4000)),  # the next hour
        ("a", CLICK, 1, HUMAN, seconds(10)),
        ("a", CLICK, 1, HUMAN, seconds(11)),  # the same link twice: a person
        ("a", CLICK, 2, HUMAN, seconds(60)),
        ("b", OPEN, None, MACHINE, seconds(1)),
        ("s", CLICK, 1, HUMAN, seconds(5)),  # three links within 2 s: a scanner, all three
        ("s", CLICK, 2, HUMAN, seconds(5.5)),
        ("s", CLICK, 3, HUMAN, seconds(6.9)),
    ]
    result = tally(events)
    assert result.sum(OPEN, 0, HUMAN) == (1, 2)
    assert result.sum(OPEN, 0, MACHINE) == (1, 1)
    assert result.sum(CLICK, 0, HUMAN) == (1, 3)
    assert result.sum(CLICK, 1, HUMAN) == (1, 2)
    assert result.sum(CLICK, 2, HUMAN) == (1, 1)
    assert result.sum(CLICK, 0, MACHINE) == (1, 3)
    assert result.sum(CLICK, 3, MACHINE) == (1, 1) and result.sum(CLICK, 3, HUMAN) == (0, 0)
    hour = T0.replace(minute=0)
    assert result.unique[(OPEN, 0, HUMAN, hour)] == 1 and result.total[(OPEN, 0, HUMAN, hour)] == 1
    assert result.unique.get((OPEN, 0, HUMAN, hour + timedelta(hours=1)), 0) == 0  # counted in its first hour
