"""/api/lists: mailing lists (editors read, admins write)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from newsletter.content.email_templates import SHIPPED, set_list_template
from newsletter.delivery import scheduling
from newsletter.delivery.automation_editions import refresh_shipped
from newsletter.http.api.auth import ListReader, ListWriter
from newsletter.http.api.common import errors, field_names, render_settings
from newsletter.http.api.schemas import SLUG_PATTERN, ListCreate, ListOut, ListsOut, ListUpdate
from newsletter.http.context import web
from newsletter.store.models import utcnow
from subscribers import lists
from subscribers.lists import ListCounts

router = APIRouter(prefix="/lists", tags=["lists"])

SlugPath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=64, description="The list's slug.")]
_CLI_NAMES = {
    "SLUG": "slug",
    "--name": "name",
    "--from-email": "from_email",
    "--from-name": "from_name",
    "--reply-to": "reply_to",
    "--description": "description",
    "--tracking": "tracking",
    "--language": "language",
    "--template": "template",
}


def list_out(row: ListCounts) -> ListOut:
    m = row.mailing_list
    slot = scheduling.slot_of(m)
    return ListOut.model_validate(
        {
            "slug": m.slug,
            "name": m.name,
            "from_email": m.from_email,
            "from_name": m.from_name,
            "reply_to": m.reply_to,
            "description": m.description,
            "private": bool(m.private),
            "tracking": m.tracking,
            "language": m.language,
            "template": m.template or SHIPPED,
            "slot": None
            if slot is None
            else {
                "weekday": scheduling.WEEKDAYS[slot.weekday],
                "time": slot.time,
                "timezone": slot.timezone,
                "description": slot.describe(),
                "next_at": slot.next_after(utcnow()),
            },
            "counts": row.counts,
            "total": row.total,
            "created_at": m.created_at,
        }
    )


@router.get("", response_model=ListsOut, responses=errors(), summary="Every list with its subscription counts")
def all_lists(request: Request, caller: ListReader) -> ListsOut:
    with web(request).reading() as session:
        return ListsOut(items=[list_out(row) for row in lists.all_lists_with_counts(session)])


@router.post("", status_code=201, response_model=ListOut, responses=errors(400, 409), summary="Create a list")
def create_list(request: Request, body: ListCreate, caller: ListWriter) -> ListOut:
    with web(request).transaction() as session, field_names(_CLI_NAMES):
        lists.create_list(
            session,
            body.slug,
            name=body.name,
            from_email=body.from_email,
            from_name=body.from_name,
            reply_to=body.reply_to or None,
            description=body.description,
            private=body.private,
            tracking=body.tracking,
            language=body.language,
        )
        if body.template != SHIPPED:
            set_list_template(session, body.slug, body.template)
        return list_out(lists.list_with_counts(session, body.slug))


@router.get("/{slug}", response_model=ListOut, responses=errors(404), summary="One list")
def get_list(request: Request, slug: SlugPath, caller: ListReader) -> ListOut:
    with web(request).reading() as session:
        return list_out(lists.list_with_counts(session, slug))


@router.patch("/{slug}", response_model=ListOut, responses=errors(400, 404), summary="Change a list's settings")
def update_list(request: Request, slug: SlugPath, body: ListUpdate, caller: ListWriter) -> ListOut:
    """Only the fields given change. ``reply_to: ""`` removes the reply-to; ``private`` hides the list
    from the public home page, form and archive (``false`` shows it again); ``tracking`` (off, anonymous,
    individual) counts the opens and clicks of sends started from now on; ``language`` (en, de, fr, es)
    is the language of the list's emails from now on; ``template`` chooses the email layout of the list's
    issues (a stored template, or ``issue`` for the shipped one); ``slot`` sets the weekly
    slot (weekday, time, timezone) at which issues marked ready go out, ``slot: null`` removes it."""
    with web(request).transaction() as session:
        before = lists.get_list(session, slug).language
        with field_names(_CLI_NAMES):
            changed = lists.update_list(
                session,
                slug,
                name=body.name,
                from_email=body.from_email,
                from_name=body.from_name,
                reply_to=body.reply_to,
                description=body.description,
                private=body.private,
                tracking=body.tracking,
                language=body.language,
            )
            if body.template is not None:
                set_list_template(session, slug, body.template)
        if changed.language != before:  # the shipped welcome and goodbye, frozen again in the new language
            refresh_shipped(session, changed, render_settings(request))
        if "slot" in body.model_fields_set:
            with field_names({"weekday": "slot.weekday", "time": "slot.time", "timezone": "slot.timezone"}):
                slot = body.slot and scheduling.parse_slot(body.slot.weekday, body.slot.time, body.slot.timezone)
            scheduling.set_weekly_slot(session, slug, slot or None)
        return list_out(lists.list_with_counts(session, slug))


@router.delete(
    "/{slug}",
    status_code=204,
    response_class=Response,
    responses=errors(404, 409),
    summary="Delete a list and its subscriptions",
)
def delete_list(request: Request, slug: SlugPath, caller: ListWriter) -> Response:
    """Refused (409) while the list has issues or sends: their history needs it. The subscribers stay."""
    with web(request).transaction() as session:
        lists.delete_list(session, slug)
    return Response(status_code=204)
