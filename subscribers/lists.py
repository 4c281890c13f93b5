"""Mailing lists: create, change, delete, look up (all, or only the public ones), and count their subscriptions by status."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.locales.languages import SOURCE, parse_language
from newsletter.store.models import Issue, MailingList, Send, Subscription
from newsletter.store.states import SubscriptionStatus, Tracking
from subscribers.addresses import check_display_name, normalise_email

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
DESCRIPTION_MAX = 5000


@dataclass(frozen=True)
class ListCounts:
    mailing_list: MailingList
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def create_list(
    session: Session,
    slug: str,
    *,
    name: str,
    from_email: str,
    from_name: str = "",
    reply_to: str | None = None,
    description: str = "",
    private: bool = False,
    tracking: str = Tracking.OFF,
    language: str = SOURCE,
) -> MailingList:
    """Create a list (``private``, ``tracking``, ``language``: see `update_list`).

    Raises InvalidInput for a bad slug, name, address or language; Conflict if the slug is taken.
    """
    if not SLUG_RE.match(slug):
        raise InvalidInput(
            f"list slug {slug!r} must be 1-64 lower-case letters, digits or dashes, starting with a letter or digit",
            where="SLUG",
        )
    name = _field("--name", name)
    if not name:
        raise InvalidInput("a list needs a name", where="--name")
    from_email = _address("--from-email", from_email)
    reply_to = _address("--reply-to", reply_to) if reply_to else None
    from_name = _field("--from-name", from_name)
    description = _description(description)
    chosen = parse_tracking(tracking)
    language = parse_language(language)
    if session.scalar(select(MailingList.id).where(MailingList.slug == slug)) is not None:
        raise Conflict(f"a list with slug {slug!r} already exists")
    mailing_list = MailingList(
        slug=slug,
        name=name,
        from_email=from_email,
        from_name=from_name,
        reply_to=reply_to,
        description=description,
        private=private,
        tracking=chosen,
        language=language,
    )
    session.add(mailing_list)
    session.flush()
    return mailing_list


def update_list(
    session: Session,
    slug: str,
    *,
    name: str | None = None,
    from_email: str | None = None,
    from_name: str | None = None,
    reply_to: str | None = None,
    description: str | None = None,
    private: bool | None = None,
    tracking: str | None = None,
    language: str | None = None,
) -> MailingList:
    """Change a list's settings (None leaves a field as it is; an empty ``reply_to`` removes it).

    Checked as `create_list` checks them. A private list is not on the public home page,
    and its form and archive answer as if it did not exist; admins and the API still add
    people to it. ``tracking`` (off, anonymous, individual: newsletter.engagement) counts the
    opens and clicks of sends started from now on. ``language`` (a shipped one: en, de, fr, es)
    is the language of its emails from now on (the confirmation, the footer of the sends started
    from now on) and of its pages for readers whose browser asks for none of the shipped ones.
    Raises NotFound, InvalidInput (``where`` names the field as a CLI option, like `create_list`);
    nothing changes when a field is refused.
    """
    mailing_list = get_list(session, slug)
    changes: dict[str, str | bool | Tracking | None] = {}
    if name is not None:
        changes["name"] = _field("--name", name)
        if not changes["name"]:
            raise InvalidInput("a list needs a name", where="--name")
    if from_email is not None:
        changes["from_email"] = _address("--from-email", from_email)
    if from_name is not None:
        changes["from_name"] = _field("--from-name", from_name)
    if reply_to is not None:
        changes["reply_to"] = _address("--reply-to", reply_to) if reply_to.strip() else None
    if description is not None:
        changes["description"] = _description(description)
    if private is not None:
        changes["private"] = private
    if tracking is not None:
        changes["tracking"] = parse_tracking(tracking)
    if language is not None:
        changes["language"] = parse_language(language)
    for key, value in changes.items():
        setattr(mailing_list, key, value)
    session.flush()
    return mailing_list


def parse_tracking(value: str) -> Tracking:
    """A tracking choice as given; raises InvalidInput naming the choices."""
    try:
        return Tracking(value.strip().lower())
    except ValueError:
        choices = ", ".join(t.value for t in Tracking)
        raise InvalidInput(f"tracking must be one of {choices}, not {value!r}", where="--tracking") from None


def delete_list(session: Session, slug: str) -> None:
    """Delete a list with its subscriptions (the subscribers stay). Raises NotFound, Conflict when it has issues."""
    mailing_list = get_list(session, slug)
    issues = session.scalar(select(func.count()).select_from(Issue).where(Issue.list_id == mailing_list.id)) or 0
    sends = session.scalar(select(func.count()).select_from(Send).where(Send.list_id == mailing_list.id)) or 0
    if issues or sends:
        raise Conflict(
            f"list {slug!r} has {issues} issue(s) and {sends} send(s); their history keeps it, so it cannot be deleted"
        )
    session.delete(mailing_list)
    session.flush()


def get_list(session: Session, slug: str) -> MailingList:
    """Raises NotFound when no list has this slug."""
    mailing_list = session.scalar(select(MailingList).where(MailingList.slug == slug))
    if mailing_list is None:
        known = session.scalars(select(MailingList.slug).order_by(MailingList.slug).limit(10)).all()
        hint = (
            f" (lists: {', '.join(known)})" if known else " (no lists yet: create one with `newsletter lists create`)"
        )
        raise NotFound(f"no list {slug!r}{hint}")
    return mailing_list


def get_public_list(session: Session, slug: str) -> MailingList:
    """The list as the public pages may show it. Raises NotFound for an unknown list and for a
    private one alike, with a message that names no other list: a page must not tell that a
    private list exists."""
    mailing_list = session.scalar(select(MailingList).where(MailingList.slug == slug))
    if mailing_list is None or mailing_list.private:
        raise NotFound(f"no public list {slug!r}")
    return mailing_list


def all_lists_with_counts(session: Session) -> list[ListCounts]:
    rows = session.execute(
        select(Subscription.list_id, Subscription.status, func.count()).group_by(
            Subscription.list_id, Subscription.status
        )
    ).all()
    by_list: dict[int, dict[str, int]] = {}
    for list_id, status, count in rows:
        by_list.setdefault(list_id, {})[status] = count
    lists = session.scalars(select(MailingList).order_by(MailingList.slug)).all()
    return [ListCounts(m, {s: by_list.get(m.id, {}).get(s, 0) for s in SubscriptionStatus}) for m in lists]


def list_with_counts(session: Session, slug: str) -> ListCounts:
    """Raises NotFound."""
    mailing_list = get_list(session, slug)
    rows = session.execute(
        select(Subscription.status, func.count())
        .where(Subscription.list_id == mailing_list.id)
        .group_by(Subscription.status)
    ).all()
    found = dict(rows)
    return ListCounts(mailing_list, {s: found.get(s, 0) for s in SubscriptionStatus})


def _field(where: str, value: str) -> str:
    try:
        return check_display_name(value)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, where=where) from None


def _description(value: str) -> str:
    value = value.strip()
    if "\x00" in value:
        raise InvalidInput("the description contains a NUL character", where="--description")
    if len(value) > DESCRIPTION_MAX:
        raise InvalidInput(f"the description is longer than {DESCRIPTION_MAX} characters", where="--description")
    return value


def _address(where: str, value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, where=where) from None
