"""Engagement tracking end to end: a real worker sends a tracked issue, a real `newsletter web` counts
opens and clicks as readers and scanners make them, and `sends report` gives the exact figures."""

from __future__ import annotations

import json
import re
import time
from email.message import EmailMessage

import httpx
import pytest

from tests.sendkit import Newsroom
from tests.test_web_journey import free_port, start_web
from tests.textkit import body_text

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
APPLE_PROXY = "Mozilla/5.0"


def _html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return part.get_content()


def _tracked(room: Newsroom, base: str, address: str) -> tuple[list[str], str]:
    """The click links (in order of first appearance) and the open image of one reader's copy."""
    html = _html(room.parsed(address))
    clicks = list(dict.fromkeys(re.findall(rf'href="({re.escape(base)}/t/c/[^"]+)"', html)))
    (image,) = re.findall(rf'<img src="({re.escape(base)}/t/o/[^"]+)"', html)
    return clicks, image


def _send(room: Newsroom, tracking: str, count: int) -> tuple[str, list[str]]:
    addresses = room.setup_list(count)
    room.cli("lists", "update", "weekly", "--tracking", tracking)
    room.start_worker(concurrency=1)
    send_id = room.send(room.create_issue())
    room.wait_status(send_id)
    return send_id, addresses


def test_a_tracked_send_counts_people_and_machines_apart_and_reports_them_exactly(newsroom_any_db: Newsroom):
    room = newsroom_any_db
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    room.cli.env["NEWSLETTER_BASE_URL"] = base
    send_id, (ann, bob, cy, _dee) = _send(room, "anonymous", 4)
    web = start_web(room.cli.env, room.tmp, port)
    try:
        originals = room.cli("sends", "log", send_id, "--csv")  # nothing to do with links: just the log works
        assert originals.stdout.count("sent") >= 4
        ann_links, ann_image = _tracked(room, base, ann)
        assert len(ann_links) >= 3
        text = body_text(room.parsed(ann))
        assert set(re.findall(r"https?://\S+/t/c/\S+", text)) <= set(ann_links)  # the plain-text part's links are
        assert len(re.findall(rf"{re.escape(base)}/t/c/{send_id}/", text)) >= 2  # tracked too, with the same tokens
        unsubscribe = room.parsed(ann)["List-Unsubscribe"]
        assert "/t/" not in unsubscribe and "/unsubscribe/" in unsubscribe
        assert "/unsubscribe/" in _html(room.parsed(ann))  # the footer's own links are not rewritten

        with httpx.Client(follow_redirects=False, timeout=10) as http:
            # What each tracked link points to: the redirect answers with exactly the issue's address.
            archive = http.get(f"{base}/archive/weekly/{room.status(send_id)['issue_id']}")
            assert archive.status_code == 200 and "/t/c/" not in archive.text and "/t/o/" not in archive.text
            first = http.get(ann_links[0], headers={"User-Agent": CHROME})
            assert first.status_code == 302
            target = first.headers["location"]
            assert target.startswith("http") and "/t/c/" not in target
            assert f'href="{target}"'.replace("&", "&amp;") in archive.text  # the archived copy links there itself
            assert first.headers["cache-control"].startswith("no-store")

            # Ann: opens twice, follows link 1 twice and, later, link 2: one person.
            for _ in range(2):
                image = http.get(ann_image, headers={"User-Agent": CHROME})
                assert image.status_code == 200 and image.headers["content-type"] == "image/gif"
                assert "no-store" in image.headers["cache-control"]
            http.get(ann_links[0], headers={"User-Agent": CHROME})
            time.sleep(2.2)
            http.get(ann_links[1], headers={"User-Agent": CHROME})

            # Bob: Apple Mail Privacy Protection fetches his image: a machine open, and nothing else.
            bob_links, bob_image = _tracked(room, base, bob)
            http.get(bob_image, headers={"User-Agent": APPLE_PROXY})

            # Cy: a security gateway checks his links, HEAD first, then follows three within two seconds.
            cy_links, _ = _tracked(room, base, cy)
            assert http.head(cy_links[0], headers={"User-Agent": CHROME}).status_code == 302
            for link in cy_links[:3]:
                http.get(link, headers={"User-Agent": CHROME})
            # Dee does nothing.

            # Forged, foreign and unknown links: 404, and never a redirect.
            forged = ann_links[0][:-2] + ("AA" if not ann_links[0].endswith("AA") else "BB")
            other_send = ann_links[0].replace(f"/t/c/{send_id}/", f"/t/c/{int(send_id) + 1}/")
            no_such_link = re.sub(r"/t/c/(\d+)/\d+/", r"/t/c/\1/999/", ann_links[0])
            someone_else = ann_links[0].rsplit("/", 1)[0] + "/" + bob_links[0].rsplit("/", 1)[1].replace(".", "0.", 1)
            for bad in (
                forged,
                other_send,
                no_such_link,
                someone_else,
                f"{base}/t/c/x/1/1.a",
                f"{base}/t/c/{send_id}/1/",
            ):
                answer = http.get(bad, headers={"User-Agent": CHROME})
                assert answer.status_code == 404, bad
                assert "location" not in answer.headers
            forged_image = http.get(ann_image[:-2] + "zz", headers={"User-Agent": CHROME})
            assert forged_image.status_code == 200 and forged_image.headers["content-type"] == "image/gif"
    finally:
        web.stop()

    report = json.loads(room.cli("sends", "report", send_id, "--json").stdout)
    assert (report["recipients"], report["delivered"], report["failed"], report["bounced"]) == (4, 4, 0, 0)
    assert report["tracking"] == "anonymous"
    assert report["opens"] == {"unique": 1, "total": 2, "machine_unique": 1, "machine_total": 1}
    # Ann: 3 clicks on 2 links. Cy: a HEAD and a burst of 3, all machine.
    assert report["clicks"] == {"unique": 1, "total": 3, "machine_unique": 1, "machine_total": 4}
    assert report["open_rate"] == 0.25 and report["click_through_rate"] == 0.25 and report["click_to_open_rate"] == 1.0
    by_position = {link["position"]: link for link in report["links"]}
    assert (by_position[1]["unique"], by_position[1]["total"], by_position[1]["machine"]) == (1, 2, 2)
    assert (by_position[2]["unique"], by_position[2]["total"], by_position[2]["machine"]) == (1, 1, 1)
    assert (by_position[3]["unique"], by_position[3]["total"], by_position[3]["machine"]) == (0, 0, 1)
    assert by_position[1]["url"] == target
    assert sum(hour["opens"] for hour in report["timeline"]) == 2
    assert "estimates" in report["note"]
    shown = room.cli("sends", "report", send_id).stdout
    assert "1 unique, 2 in all" in shown and "machine opens" in shown and target in shown


def test_a_list_without_tracking_sends_its_links_as_written_and_no_image(newsroom: Newsroom):
    room = newsroom
    send_id, addresses = _send(room, "off", 2)
    html = _html(room.parsed(addresses[0]))
    assert "/t/c/" not in html and "/t/o/" not in html and "<img" not in html.split("</table>")[-1]
    assert 'href="https://' in html
    report = json.loads(room.cli("sends", "report", send_id, "--json").stdout)
    assert report["tracking"] == "off" and report["opens"]["total"] == 0 and report["links"] == []
    assert "Tracking was off" in room.cli("sends", "report", send_id).stdout
