"""A list's automated emails: its welcome, the steps of its sequence, and its goodbye.

Each is an :class:`~newsletter.store.models.Automation` of the list, sending an issue of the
list or, for the welcome and the goodbye, the shipped text (``templates/email/welcome.*``,
``goodbye.*``). The rules (who gets what, and when, is :mod:`subscribers.automation_mails`):

* **Welcome** (off until switched on): goes to whoever confirms through the opt-in link (the
  form's confirmation email, or a list's request to confirm), and, with ``also_added``, to
  subscribers an editor adds as confirmed (`subscribers add --confirmed`, the API, the admin
  subscriber page). A CSV import welcomes no one.
* **Steps** (none until added): an issue and a number of days; each goes to a confirmed
  subscriber that many days after they confirmed, once, in order, and only to people who
  confirmed after the step was added: adding a step never mails a list's existing subscribers.
* **Goodbye** (off until switched on): goes once to someone who leaves by themselves (the
  unsubscribe link, one-click, the preferences page, a mailed unsubscribe), never after a
  bounce, a complaint, an editor's removal or "leave everything" (which suppresses the address).

A list's welcome and goodbye are each one row, switched on and off, never deleted: each person
gets a list's welcome at most once, whatever is switched or changed later. A removed step keeps
its row (``removed_at``) and its log. Switching and removing take effect for the emails not yet
sent. What each one sends is rendered when it is set up and frozen on its row
(``delivery.automation_editions.freeze``, called by every edge that changes one): an issue
edited later changes nothing until the list's automated emails are refreshed, and
:func:`overview` says which ones' issue changed since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.models import Automation, AutomationMail, Issue, MailingList, utcnow
from newsletter.store.states import AutomationKind, AutomationMailStatus
from subscribers.lists import get_list

#: A step's offset: at most ten years.
MAX_OFFSET_DAYS = 3650
#: Steps of one list.
MAX_STEPS = 100


@dataclass(frozen=True)
class AutomationView:
    """One automated email of a list, as the CLI, the admin UI and the API show it."""

    id: int | None  # None: a welcome or goodbye never switched on
    kind: AutomationKind
    enabled: bool
    issue_id: int | None  # None: the shipped text
    subject: str | None  # the issue's subject; None for the shipped text
    offset_days: int | None = None  # steps only
    also_added: bool = False  # the welcome only
    counts: dict[str, int] = field(default_factory=dict)  # its emails by status
    created_at: datetime | None = None
    # Its issue was changed after what it sends was frozen: the change reaches nobody until it is refreshed.
    issue_changed: bool = False

    @property
    def sent(self) -> int:
        return self.counts.get(AutomationMailStatus.SENT, 0)

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "enabled": self.enabled,
            "issue": self.issue_id,
            "subject": self.subject,
        }
        if self.kind == AutomationKind.STEP:
            shown["day"] = self.offset_days
        if self.kind == AutomationKind.WELCOME:
            shown["also_added"] = self.also_added
        shown["issue_changed"] = self.issue_changed
        shown.update({str(s): self.counts.get(s, 0) for s in AutomationMailStatus})
        if self.kind == AutomationKind.STEP:
            shown["added_at"] = _iso(self.created_at)
        return shown


@dataclass(frozen=True)
class Overview:
    """A list's automated emails: welcome, steps in the order they go out, goodbye."""

    list_slug: str
    welcome: AutomationView
    steps: list[AutomationView]
    goodbye: AutomationView

    def as_json(self) -> dict[str, Any]:
        return {
            "list": self.list_slug,
            "welcome": self.welcome.as_json(),
            "steps": [s.as_json() for s in self.steps],
            "goodbye": self.goodbye.as_json(),
        }


def overview(session: Session, list_slug: str) -> Overview:
    """The list's welcome, steps and goodbye, each with its emails counted by status. Raises NotFound."""
    mailing_list = get_list(session, list_slug)
    rows = session.execute(
        select(Automation, Issue.subject, Issue.updated_at)
        .outerjoin(Issue, Issue.id == Automation.issue_id)
        .where(Automation.list_id == mailing_list.id, Automation.removed_at.is_(None))
        .order_by(Automation.offset_days, Automation.id)
    ).all()
    counts: dict[int, dict[str, int]] = {}
    for automation_id, status, count in session.execute(
        select(AutomationMail.automation_id, AutomationMail.status, func.count())
        .where(AutomationMail.list_id == mailing_list.id)
        .group_by(AutomationMail.automation_id, AutomationMail.status)
    ):
        counts.setdefault(automation_id, {})[str(status)] = count
    views = {kind: _off(kind) for kind in (AutomationKind.WELCOME, AutomationKind.GOODBYE)}
    steps = []
    for automation, subject, issue_updated in rows:
        view = _view(automation, subject, counts.get(automation.id, {}), issue_updated)
        if automation.kind == AutomationKind.STEP:
            steps.append(view)
        else:
            views[automation.kind] = view
    return Overview(mailing_list.slug, views[AutomationKind.WELCOME], steps, views[AutomationKind.GOODBYE])


def set_welcome(
    session: Session,
    list_slug: str,
    *,
    enabled: bool | None = None,
    issue_id: int | None = None,
    shipped_text: bool = False,
    also_added: bool | None = None,
) -> Automation:
    """Switch the list's welcome on or off, choose what it sends (an issue of the list, or the shipped
    text), and whether subscribers an editor adds as confirmed get it too. Only what is given changes.

    Raises NotFound (list), InvalidInput (an issue of another list, or both an issue and the shipped
    text, with ``where`` naming the CLI option).
    """
    if issue_id is not None and shipped_text:
        raise InvalidInput("give --issue ID or --shipped-text, not both", where="--shipped-text")
    mailing_list = _locked_list(session, list_slug)
    welcome = _once(session, mailing_list, AutomationKind.WELCOME)
    if issue_id is not None:
        welcome.issue_id = _issue_of(session, mailing_list, issue_id, where="--issue")
    elif shipped_text:
        welcome.issue_id = None
    if enabled is not None:
        welcome.enabled = enabled
    if also_added is not None:
        welcome.also_added = also_added
    welcome.updated_at = utcnow()
    session.flush()
    return welcome


def set_goodbye(session: Session, list_slug: str, *, enabled: bool) -> Automation:
    """Switch the list's goodbye (the shipped text) on or off. Raises NotFound."""
    goodbye = _once(session, _locked_list(session, list_slug), AutomationKind.GOODBYE)
    goodbye.enabled = enabled
    goodbye.updated_at = utcnow()
    session.flush()
    return goodbye


def add_step(session: Session, list_slug: str, issue_id: int, offset_days: int) -> Automation:
    """Add a step to the list's sequence: the issue, ``offset_days`` after each later confirmation.

    Raises NotFound (list), InvalidInput (an issue of another list, an offset out of range, too many
    steps; ``where`` names the CLI option).
    """
    if not 0 <= offset_days <= MAX_OFFSET_DAYS:
        raise InvalidInput(f"the day must be between 0 and {MAX_OFFSET_DAYS}, not {offset_days}", where="--day")
    mailing_list = _locked_list(session, list_slug)
    steps = session.scalar(
        select(func.count()).where(
            Automation.list_id == mailing_list.id,
            Automation.kind == AutomationKind.STEP,
            Automation.removed_at.is_(None),
        )
    )
    if (steps or 0) >= MAX_STEPS:
        raise InvalidInput(f"{list_slug} has {MAX_STEPS} steps already; remove one first", where="--day")
    issue = _issue_of(session, mailing_list, issue_id, where="ISSUE")
    twin = session.scalar(
        select(Automation).where(
            Automation.list_id == mailing_list.id,
            Automation.kind == AutomationKind.STEP,
            Automation.removed_at.is_(None),
            Automation.issue_id == issue,
        )
    )
    if twin is not None:  # each subscriber would get the issue twice
        raise InvalidInput(
            f"issue {issue} is already step {twin.id} of {list_slug}'s sequence (day {twin.offset_days}); "
            "remove that step first to send it on another day",
            where="ISSUE",
        )
    now = utcnow()
    step = Automation(
        list_id=mailing_list.id,
        kind=AutomationKind.STEP,
        issue_id=issue,
        offset_days=offset_days,
        enabled=True,
        also_added=False,
        created_at=now,
        updated_at=now,
    )
    session.add(step)
    session.flush()
    return step


def remove_step(session: Session, list_slug: str, step_id: int) -> Automation:
    """Remove a step of the list's sequence: nobody gets it any more; its log stays. Raises NotFound."""
    mailing_list = _locked_list(session, list_slug)
    step = session.scalar(
        select(Automation).where(
            Automation.id == step_id,
            Automation.list_id == mailing_list.id,
            Automation.kind == AutomationKind.STEP,
            Automation.removed_at.is_(None),
        )
    )
    if step is None:
        raise NotFound(f"{list_slug} has no step {step_id} (see `newsletter automations show {list_slug}`)")
    step.removed_at = step.updated_at = utcnow()
    session.flush()
    return step


def get_automation(session: Session, list_slug: str, automation_id: int) -> Automation:
    """An automation of the list (a removed step too: its log stays readable). Raises NotFound."""
    mailing_list = get_list(session, list_slug)
    automation = session.get(Automation, automation_id)
    if automation is None or automation.list_id != mailing_list.id:
        raise NotFound(f"{list_slug} has no automated email {automation_id}")
    return automation


def uses_of_issue(session: Session, issue_id: int) -> list[str]:
    """What sends the issue automatically, e.g. "the welcome of weekly", "step 3 (day 7) of weekly"."""
    rows = session.execute(
        select(Automation.id, Automation.kind, Automation.offset_days, Automation.removed_at, MailingList.slug)
        .join(MailingList, MailingList.id == Automation.list_id)
        .where(Automation.issue_id == issue_id)
        .order_by(Automation.id)
    ).all()
    uses = []
    for automation_id, kind, offset_days, removed_at, slug in rows:
        if kind == AutomationKind.STEP:
            gone = " (removed; its log needs the issue)" if removed_at is not None else ""
            uses.append(f"step {automation_id} (day {offset_days}) of {slug}'s sequence{gone}")
        else:
            uses.append(f"the {kind} of {slug}")
    return uses


def describe(kind: str, offset_days: int | None) -> str:
    """How a log names an automated email: "welcome", "day 3", "goodbye"."""
    return f"day {offset_days}" if kind == AutomationKind.STEP else str(kind)


# --- helpers ---------------------------------------------------------------------------


def _locked_list(session: Session, list_slug: str) -> MailingList:
    """The list, its row locked on PostgreSQL (SQLite writes one transaction at a time): two editors
    switching the welcome on at once make one welcome, not two."""
    mailing_list = get_list(session, list_slug)
    session.execute(select(MailingList.id).where(MailingList.id == mailing_list.id).with_for_update())
    return mailing_list


def _once(session: Session, mailing_list: MailingList, kind: AutomationKind) -> Automation:
    """The list's welcome or goodbye, made (switched off, the shipped text) the first time it is asked for."""
    found = session.scalar(select(Automation).where(Automation.list_id == mailing_list.id, Automation.kind == kind))
    if found is not None:
        return found
    now = utcnow()
    made = Automation(
        list_id=mailing_list.id, kind=kind, enabled=False, also_added=False, created_at=now, updated_at=now
    )
    session.add(made)
    session.flush()
    return made


def _issue_of(session: Session, mailing_list: MailingList, issue_id: int, *, where: str) -> int:
    issue_list = session.scalar(select(Issue.list_id).where(Issue.id == issue_id))
    if issue_list is None:
        raise InvalidInput(
            f"there is no issue {issue_id} (see `newsletter issues ls {mailing_list.slug}`)", where=where
        )
    if issue_list != mailing_list.id:
        other = session.scalar(select(MailingList.slug).where(MailingList.id == issue_list))
        raise InvalidInput(
            f"issue {issue_id} is an issue of {other}, not of {mailing_list.slug}: an automated email sends an issue "
            f"of its own list (create one with `newsletter issues create {mailing_list.slug} FILE`)",
            where=where,
        )
    return issue_id


def _off(kind: AutomationKind) -> AutomationView:
    return AutomationView(None, kind, False, None, None)


def _view(
    automation: Automation, subject: str | None, counts: dict[str, int], issue_updated: datetime | None
) -> AutomationView:
    frozen = automation.rendered_at
    return AutomationView(
        automation.id,
        automation.kind,
        bool(automation.enabled),
        automation.issue_id,
        subject,
        offset_days=automation.offset_days,
        also_added=bool(automation.also_added),
        counts=counts,
        created_at=automation.created_at,
        issue_changed=bool(automation.enabled)
        and frozen is not None
        and issue_updated is not None
        and issue_updated > frozen,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None
