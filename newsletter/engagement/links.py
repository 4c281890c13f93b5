"""A tracked send's links: found and numbered once when the send starts, rewritten in each worker's copy.

Every ``http(s)`` link of the rendered issue is tracked except the personal ones (unsubscribe,
preferences, view online: they hold a placeholder). Each distinct address is numbered in the
order it first appears (1, 2, ...), and every ``<a href>`` to it in the HTML, and every
occurrence of it in the plain-text part, becomes ``BASE/t/c/SEND/POSITION/TOKEN``, TOKEN being
the recipient's ``<delivery>.<signature>`` (:meth:`subscribers.tokens.TokenSigner.tracking_token`).
The HTML also gets a 1×1 image, ``BASE/t/o/SEND/TOKEN``, before ``</body>``.

The rendered issue is our own templates' output (double-quoted attributes), so a regular
expression over ``href="..."`` finds every link; an address is HTML-unescaped before it is
stored, and the redirect answers with exactly that.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from newsletter.content.rendering import has_placeholder, placeholder
from newsletter.engagement.events import new_reader_key
from newsletter.store.models import MailingList, Send, SendLink
from newsletter.store.states import Tracking

__all__ = ["click_url", "find_links", "freeze", "link_urls", "open_url", "track"]

_HREF = re.compile(r'(<a\b[^>]*?\shref=")([^"]*)(")', re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"\[\]]+")
_TRAILING = ".,;:!?)'"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _trackable(url: str) -> bool:
    return url.lower().startswith(("http://", "https://")) and not has_placeholder(url)


def find_links(rendered_html: str) -> list[str]:
    """The issue's trackable link addresses, each once, in the order they first appear (position 1 first)."""
    seen: dict[str, None] = {}
    for match in _HREF.finditer(rendered_html):
        url = html.unescape(match.group(2))
        if _trackable(url):
            seen.setdefault(url, None)
    return list(seen)


def click_url(base_url: str, send_id: int, position: int, token: str) -> str:
    return f"{base_url}/t/c/{send_id}/{position}/{token}"


def open_url(base_url: str, send_id: int, token: str) -> str:
    return f"{base_url}/t/o/{send_id}/{token}"


def track(rendered_html: str, text: str, base_url: str, send_id: int, urls: Sequence[str]) -> tuple[str, str]:
    """The html and text with every link in ``urls`` (position = index + 1) pointing to its redirect,
    and the open image added; the recipient's token stays a placeholder."""
    positions = {url: i for i, url in enumerate(urls, start=1)}
    token = placeholder("tracking")

    def in_html(match: re.Match[str]) -> str:
        position = positions.get(html.unescape(match.group(2)))
        if position is None:
            return match.group(0)
        target = html.escape(click_url(base_url, send_id, position, ""), quote=True) + token
        return match.group(1) + target + match.group(3)

    def in_text(match: re.Match[str]) -> str:
        found = match.group(0)
        url = found.rstrip(_TRAILING)
        position = positions.get(url)
        if position is None:
            return found
        return click_url(base_url, send_id, position, "") + token + found[len(url) :]

    tracked_html = _HREF.sub(in_html, rendered_html)
    image = (
        f'<img src="{html.escape(open_url(base_url, send_id, ""), quote=True)}{token}" width="1" height="1" '
        'alt="" style="display:block;border:0;width:1px;height:1px;overflow:hidden">'
    )
    ends = list(_BODY_END.finditer(tracked_html))
    if ends:
        at = ends[-1].start()
        tracked_html = tracked_html[:at] + image + tracked_html[at:]
    else:
        tracked_html += image
    return tracked_html, _TEXT_URL.sub(in_text, text)


#: From least to most: a send to several lists counts its readers only as far as every one of them allows.
TRACKING_ORDER = (Tracking.OFF, Tracking.ANONYMOUS, Tracking.INDIVIDUAL)


def freeze(session: Session, send: Send, list_ids: Sequence[int] = ()) -> None:
    """Freeze the tracking of the send's lists (its own, or ``list_ids``) on it as it starts: a tracked send
    gets its reader key and numbered links. With several lists, the least tracking of them all counts: a
    reader of a list that tracks less never agreed to more."""
    levels = session.scalars(select(MailingList.tracking).where(MailingList.id.in_(list_ids or [send.list_id])))
    send.tracking = min((Tracking(level or Tracking.OFF) for level in levels), key=TRACKING_ORDER.index)
    if send.tracking == Tracking.OFF:
        return
    send.reader_key = new_reader_key()
    urls = find_links(send.html)
    if urls:
        session.execute(
            insert(SendLink), [{"send_id": send.id, "position": i, "url": url} for i, url in enumerate(urls, start=1)]
        )


def link_urls(session: Session, send_id: int) -> list[str]:
    """A tracked send's link addresses, in position order (position 1 first)."""
    return list(session.scalars(select(SendLink.url).where(SendLink.send_id == send_id).order_by(SendLink.position)))
