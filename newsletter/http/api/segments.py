"""/api/segments: saved segments of a list (editors and admins, like sends), and trial counts.

A filter is written in the language of :mod:`subscribers.segments` (README, section Segments);
a bad one is a 400 whose message names the part at fault and its position ("at character N")
and whose ``field`` is "filter".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from newsletter.http.api.auth import SendEditor
from newsletter.http.api.common import errors
from newsletter.http.api.schemas import NO_NUL, SLUG_PATTERN, Slug, Strict, Text
from newsletter.http.context import web
from subscribers import segments
from subscribers.lists import get_list

router = APIRouter(prefix="/segments", tags=["segments"])

Filter = Annotated[
    str,
    Text(
        segments.FILTER_MAX,
        1,
        description='A filter, e.g. domain = "gmail.com" and attribute.plan in ("pro", "team") (README: Segments).',
    ),
]
Name = Annotated[str, Text(100, 1, description="The segment's name, unique on its list.")]
ListPath = Annotated[str, Path(pattern=SLUG_PATTERN, description="The list's slug.")]
NamePath = Annotated[str, Path(min_length=1, max_length=100, pattern=NO_NUL, description="The segment's name.")]


class SegmentIn(Strict):
    list: Slug
    name: Name
    filter: Filter
    replace: bool = Field(False, description="Change the filter of an existing segment of that name.")


class SegmentCount(Strict):
    list: Slug
    filter: Filter


class SegmentOut(BaseModel):
    list: str
    name: str
    filter: str
    count: int | None = Field(description="Confirmed, unsuppressed subscribers it matches now (null in listings).")
    created_at: datetime
    updated_at: datetime


class SegmentsOut(BaseModel):
    items: list[SegmentOut]


class CountOut(BaseModel):
    list: str
    filter: str
    count: int = Field(description="Confirmed, unsuppressed subscribers of the list the filter matches now.")


def _out(view: segments.SegmentView) -> SegmentOut:
    return SegmentOut(
        list=view.list_slug,
        name=view.name,
        filter=view.filter,
        count=view.count,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


@router.get("", response_model=SegmentsOut, responses=errors(404), summary="Saved segments, by list and name")
def all_segments(
    request: Request,
    caller: SendEditor,
    list: Annotated[str | None, Query(pattern=SLUG_PATTERN, description="Only this list's segments.")] = None,
) -> SegmentsOut:
    with web(request).reading() as session:
        return SegmentsOut(items=[_out(v) for v in segments.all_segments(session, list)])


@router.post("", status_code=201, response_model=SegmentOut, responses=errors(400, 404, 409), summary="Save a segment")
def create_segment(request: Request, body: SegmentIn, caller: SendEditor) -> SegmentOut:
    """Save a segment of the list (201, with its count now). 409 when the name is taken and ``replace``
    is false; 400 for a bad filter (the message names the part and its position)."""
    with web(request).transaction() as session:
        segment = segments.create_segment(session, body.list, body.name, body.filter, replace=body.replace)
        return _out(segments.show_segment(session, body.list, segment.name))


@router.post("/count", response_model=CountOut, responses=errors(400, 404), summary="Count a filter without saving")
def count(request: Request, body: SegmentCount, caller: SendEditor) -> CountOut:
    with web(request).reading() as session:
        matched = segments.count_matching(session, get_list(session, body.list), body.filter)
    return CountOut(list=body.list, filter=body.filter, count=matched)


@router.get("/{list_slug}/{name}", response_model=SegmentOut, responses=errors(404), summary="A segment and its count")
def show_segment(request: Request, list_slug: ListPath, name: NamePath, caller: SendEditor) -> SegmentOut:
    with web(request).reading() as session:
        return _out(segments.show_segment(session, list_slug, name))


@router.delete(
    "/{list_slug}/{name}", status_code=204, response_class=Response, responses=errors(404), summary="Delete a segment"
)
def delete_segment(request: Request, list_slug: ListPath, name: NamePath, caller: SendEditor) -> Response:
    """Sends that used it keep its name and filter."""
    with web(request).transaction() as session:
        segments.delete_segment(session, list_slug, name)
    return Response(status_code=204)
