"""`/admin/subscribers` (admins only): search, edit, put on or take off a list, delete or erase.

A subscriber's page also lists their own opens and clicks, newest first (at most 100): only lists
with ``individual`` tracking keep those (``engagement_events.subscriber_id``), and only for
NEWSLETTER_TRACKING_RETENTION_DAYS; erasing the subscriber unlinks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from newsletter.access.accounts import Caller
from newsletter.errors import Conflict, InvalidInput
from newsletter.http.admin.auth import user
from newsletter.http.admin.pages import page, redirect
from newsletter.http.context import web
from newsletter.store.models import EngagementEvent, MailingList, Send, SendLink
from newsletter.store.states import EngagementKind, EngagementOrigin, SubscriptionStatus
from subscribers import directory

router = APIRouter()
Admin = Depends(user("subscribers"))
PAGE_SIZE = 50
ACTIVITY_LIMIT = 100


@dataclass(frozen=True)
class Activity:
    """One open or click of a subscriber's, as their page lists it."""

    send_id: int
    subject: str
    kind: EngagementKind
    url: str | None  # the link clicked (None for an open)
    origin: EngagementOrigin
    at: datetime


def activity(session: Session, subscriber_id: int, limit: int = ACTIVITY_LIMIT) -> list[Activity]:
    """The subscriber's own opens and clicks (individual tracking only), newest first."""
    rows = session.execute(
        select(
            EngagementEvent.send_id,
            Send.subject,
            EngagementEvent.kind,
            SendLink.url,
            EngagementEvent.origin,
            EngagementEvent.at,
        )
        .join(Send, Send.id == EngagementEvent.send_id)
        .outerjoin(
            SendLink,
            and_(SendLink.send_id == EngagementEvent.send_id, SendLink.position == EngagementEvent.position),
        )
        .where(EngagementEvent.subscriber_id == subscriber_id)
        .order_by(EngagementEvent.at.desc(), EngagementEvent.id.desc())
        .limit(limit)
    ).all()
    return [Activity(*row) for row in rows]


@router.get("/subscribers")
def search(
    request: Request,
    caller: Caller = Admin,
    q: str = "",
    list_slug: str = Query("", alias="list"),
    status: str = "",
    page_number: int = Query(1, alias="page"),
) -> HTMLResponse:
    page_number = max(1, page_number)
    chosen_status = status if status in tuple(SubscriptionStatus) else None
    with web(request).transaction() as session:
        lists = session.scalars(select(MailingList).order_by(MailingList.slug)).all()
        known = {m.slug for m in lists}
        found = directory.search_subscribers(
            session,
            query=q or None,
            list_slug=list_slug if list_slug in known else None,
            status=chosen_status,
            offset=(page_number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    pages = max(1, -(-found.total // PAGE_SIZE))
    return page(
        request,
        caller,
        "subscribers.html",
        found=found,
        lists=lists,
        q=q,
        list_slug=list_slug,
        chosen=chosen_status or "",
        statuses=tuple(SubscriptionStatus),
        page_number=page_number,
        pages=pages,
    )


@router.get("/subscribers/{subscriber_id:int}")
def show(request: Request, subscriber_id: int, caller: Caller = Admin) -> HTMLResponse:
    return _subscriber_page(request, caller, subscriber_id)


def _subscriber_page(
    request: Request,
    caller: Caller,
    subscriber_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    error_field: str = "",
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    with web(request).transaction() as session:
        subscriber = directory.get_subscriber(session, subscriber_id)
        lists = session.scalars(select(MailingList).order_by(MailingList.slug)).all()
        events = activity(session, subscriber_id)
    on = {s.list_slug for s in subscriber.subscriptions if s.status != SubscriptionStatus.UNSUBSCRIBED}
    return page(
        request,
        caller,
        "subscriber.html",
        status=status,
        subscriber=subscriber,
        other_lists=[m for m in lists if m.slug not in on],
        activity=events,
        activity_limit=ACTIVITY_LIMIT,
        error=error,
        error_field=error_field,
        form=form or {"email": subscriber.email, "name": subscriber.name},
    )


@router.post("/subscribers/{subscriber_id:int}")
def edit(
    request: Request, subscriber_id: int, caller: Caller = Admin, email: str = Form(""), name: str = Form("")
) -> Response:
    try:
        with web(request).transaction() as session:
            directory.update_subscriber(session, subscriber_id, email=email, name=name)
    except (InvalidInput, Conflict) as exc:
        invalid = isinstance(exc, InvalidInput)
        return _subscriber_page(
            request,
            caller,
            subscriber_id,
            status=400 if invalid else 409,
            error=exc.message if isinstance(exc, InvalidInput) else str(exc),
            error_field=(exc.where or "") if isinstance(exc, InvalidInput) else "email",
            form={"email": email, "name": name},
        )
    return redirect(request, f"/subscribers/{subscriber_id}", "saved")


@router.post("/subscribers/{subscriber_id:int}/subscription")
def subscription(
    request: Request,
    subscriber_id: int,
    caller: Caller = Admin,
    list_slug: str = Form("", alias="list"),
    status: str = Form(""),
) -> Response:
    """Put the subscriber on a list (``status=confirmed``) or take them off (``unsubscribed``)."""
    try:
        with web(request).transaction() as session:
            directory.set_subscription(session, subscriber_id, list_slug, status)
        web(request).queue_automated(None, subscriber_id)  # a welcome, if the list welcomes those added
    except (InvalidInput, Conflict) as exc:
        return _subscriber_page(
            request,
            caller,
            subscriber_id,
            status=400 if isinstance(exc, InvalidInput) else 409,
            error=exc.message if isinstance(exc, InvalidInput) else str(exc),
        )
    return redirect(
        request,
        f"/subscribers/{subscriber_id}",
        "subscribed" if status == SubscriptionStatus.CONFIRMED else "unsubscribed",
    )


@router.post("/subscribers/{subscriber_id:int}/delete")
def delete(request: Request, subscriber_id: int, caller: Caller = Admin, erase: str = Form("")) -> Response:
    """Unsubscribe from every list keeping the consent history, or (``erase=yes``) erase every trace."""
    erasing = erase == "yes"
    with web(request).transaction() as session:
        directory.delete_subscriber(session, subscriber_id, erase=erasing)
    if erasing:
        return redirect(request, "/subscribers", "erased")
    return redirect(request, f"/subscribers/{subscriber_id}", "deleted")
