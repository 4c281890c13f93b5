"""/api/subscribers: search, view, add, edit and delete subscribers and their subscriptions (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from newsletter.http.api.auth import SubscriberAdmin
from newsletter.http.api.common import errors, field_names, path_id
from newsletter.http.api.schemas import (
    NO_NUL,
    SLUG_PATTERN,
    SubscriberCreate,
    SubscriberOut,
    SubscriberPage,
    SubscriberUpdate,
)
from newsletter.http.context import web
from newsletter.store.states import SubscriptionStatus
from subscribers import directory, subscriptions

router = APIRouter(prefix="/subscribers", tags=["subscribers"])

SubscriberId = Annotated[int, path_id("subscriber")]
SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=64, description="The list's slug.")]
SOURCE = "api"


def subscriber_out(summary: directory.SubscriberSummary) -> SubscriberOut:
    return SubscriberOut.model_validate(summary.as_json())


@router.get("", response_model=SubscriberPage, responses=errors(404), summary="Search subscribers")
def search(
    request: Request,
    caller: SubscriberAdmin,
    q: Annotated[
        str | None, Query(max_length=320, pattern=NO_NUL, description="Part of the address or name (any case).")
    ] = None,
    list: Annotated[
        str | None, Query(pattern=SLUG_PATTERN, max_length=64, description="Only subscribers of this list.")
    ] = None,
    status: Annotated[
        SubscriptionStatus | None,
        Query(description="Only subscribers with a subscription in this status (on `list` when given)."),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=directory.MAX_PAGE)] = 50,
) -> SubscriberPage:
    """Ordered by id; each with every subscription (its consent record) and any suppression. 404 for an unknown list."""
    with web(request).reading() as session:
        page = directory.search_subscribers(session, query=q, list_slug=list, status=status, offset=offset, limit=limit)
        return SubscriberPage.model_validate(page.as_json())


@router.post(
    "",
    status_code=201,
    response_model=SubscriberOut,
    responses={
        200: {"model": SubscriberOut, "description": "The address was on the list already."},
        **errors(400, 404),
    },
    summary="Put an address on a list",
)
def add(request: Request, response: Response, body: SubscriberCreate, caller: SubscriberAdmin) -> SubscriberOut:
    """As unconfirmed, or confirmed with ``confirmed: true`` (only when you hold their consent); the
    consent record's source is "api". Someone who had unsubscribed is subscribed again by this
    explicit call. 201 when the address is new on the list, 200 when it was there already."""
    with web(request).transaction() as session, field_names({"": "email"}):
        result = subscriptions.add_subscriber(
            session, body.list, body.email, name=body.name, confirmed=body.confirmed, source=SOURCE
        )
        if not result.created:
            response.status_code = 200
        shown = subscriber_out(directory.get_subscriber(session, result.subscription.subscriber_id))
    web(request).queue_automated(None, shown.id)  # the list's welcome, if it welcomes those added as confirmed
    return shown


@router.get("/{subscriber_id}", response_model=SubscriberOut, responses=errors(404), summary="One subscriber")
def get(request: Request, subscriber_id: SubscriberId, caller: SubscriberAdmin) -> SubscriberOut:
    with web(request).reading() as session:
        return subscriber_out(directory.get_subscriber(session, subscriber_id))


@router.patch(
    "/{subscriber_id}", response_model=SubscriberOut, responses=errors(400, 404, 409), summary="Edit a subscriber"
)
def update(
    request: Request, subscriber_id: SubscriberId, body: SubscriberUpdate, caller: SubscriberAdmin
) -> SubscriberOut:
    """Only the fields given change; ``attributes`` replaces them all. 409 when another subscriber has the address."""
    with web(request).transaction() as session:
        return subscriber_out(
            directory.update_subscriber(
                session, subscriber_id, email=body.email, name=body.name, attributes=body.attributes
            )
        )


@router.put(
    "/{subscriber_id}/lists/{slug}",
    response_model=SubscriberOut,
    responses=errors(404, 409),
    summary="Subscribe to a list (confirmed)",
)
def subscribe(request: Request, subscriber_id: SubscriberId, slug: SlugPath, caller: SubscriberAdmin) -> SubscriberOut:
    """Adds the subscriber to the list as confirmed, with a new consent record (source "api"), or
    leaves a confirmed subscription as it is. 409 when the address is suppressed."""
    with web(request).transaction() as session:
        shown = subscriber_out(
            directory.set_subscription(session, subscriber_id, slug, SubscriptionStatus.CONFIRMED, source=SOURCE)
        )
    web(request).queue_automated(None, subscriber_id)  # the list's welcome, if it welcomes those added as confirmed
    return shown


@router.delete(
    "/{subscriber_id}/lists/{slug}",
    response_model=SubscriberOut,
    responses=errors(404),
    summary="Unsubscribe from a list",
)
def unsubscribe(
    request: Request, subscriber_id: SubscriberId, slug: SlugPath, caller: SubscriberAdmin
) -> SubscriberOut:
    """The subscription becomes unsubscribed; its consent record is kept, noting when and why it ended."""
    with web(request).transaction() as session:
        return subscriber_out(
            directory.set_subscription(session, subscriber_id, slug, SubscriptionStatus.UNSUBSCRIBED, source=SOURCE)
        )


@router.delete(
    "/{subscriber_id}", status_code=204, response_class=Response, responses=errors(404), summary="Delete a subscriber"
)
def delete(
    request: Request,
    subscriber_id: SubscriberId,
    caller: SubscriberAdmin,
    erase: Annotated[
        bool, Query(description="Erase every trace (GDPR) instead of unsubscribing from every list.")
    ] = False,
) -> Response:
    """Without ``erase``: unsubscribed from every list, the consent records kept as proof. With
    ``erase=true``: the subscriptions and bounce records go, the delivery log rows are anonymised, and
    the subscriber is deleted; a suppression of the address stays so it is never mailed again."""
    with web(request).transaction() as session:
        directory.delete_subscriber(session, subscriber_id, erase=erase)
    return Response(status_code=204)
