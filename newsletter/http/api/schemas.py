"""What the admin API accepts and returns: pydantic models, strict and bounded.

Every request model forbids unknown fields, and every string has a length limit and
refuses NUL characters and unpaired surrogates (PostgreSQL cannot store the one, UTF-8
cannot encode the other), so odd input is a 422 naming the field, never a 500.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from annotated_types import GroupedMetadata
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from newsletter.errors import InvalidInput
from newsletter.locales.languages import SHIPPED, SOURCE, choices, parse_language
from newsletter.store.states import (
    DeliveryStatus,
    ImportStatus,
    IssueStatus,
    SendAudience,
    SendStatus,
    SubscriptionStatus,
    SuppressionReason,
    Tracking,
)
from subscribers.lists import parse_tracking

MAX_ID = 2**53 - 1  # ids stay far below; 2**53 - 1 is also the largest integer a JSON client reads exactly
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
NO_NUL = r"^[^\x00]*$"
_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def _safe(value: str) -> str:
    if _UNSAFE.search(value):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return value


@dataclass(frozen=True)
class Text(GroupedMetadata):
    """``Annotated[str, Text(n)]``: a string of at most ``n`` characters, with no NUL and no unpaired surrogate."""

    max_length: int
    min_length: int = 0
    description: str | None = None
    format: str | None = None

    def __iter__(self) -> Iterator[object]:
        yield StringConstraints(min_length=self.min_length, max_length=self.max_length)
        yield AfterValidator(_safe)
        yield Field(
            description=self.description,
            json_schema_extra={"pattern": NO_NUL} if self.format is None else {"format": self.format},
        )


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


Slug = Annotated[
    str,
    Field(pattern=SLUG_PATTERN, min_length=1, max_length=64, description="1-64 lower-case letters, digits or dashes"),
]
Email = Annotated[
    str,
    Text(
        320,
        min_length=1,
        format="email",
        description="An email address; validated and normalised (lower-cased, IDNA domain).",
    ),
]
Moment = Annotated[AwareDatetime, AfterValidator(_utc)]


def _json_integer(value: Any) -> Any:
    """A JSON number only: "1" or true is no id (1.0 is, as JSON Schema says)."""
    if isinstance(value, (str, bool)):
        raise ValueError(f"Input should be a valid integer, not a {'boolean' if isinstance(value, bool) else 'string'}")
    return value


Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_json_integer)]
JsonInteger = BeforeValidator(_json_integer)  # for other integers of a body: a JSON number only


class Strict(BaseModel):
    """A request body: unknown fields are refused; ids and flags take no string or other type in their place."""

    model_config = ConfigDict(extra="forbid")


# --- errors -------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    status: int = Field(description="The HTTP status code, again.")
    message: str = Field(description="What is wrong, for a person to read.")
    field: str | None = Field(description="The field, parameter or FILE:LINE at fault, when there is one.")


class ErrorResponse(BaseModel):
    """Every error the API returns: ``{"error": {"status", "message", "field"}}``."""

    error: ErrorDetail


# --- lists --------------------------------------------------------------------------------


class WeeklySlotIn(Strict):
    weekday: Annotated[str, Text(9, min_length=2, description="monday ... sunday (a unique prefix will do)")]
    time: Annotated[str, Text(5, min_length=4, description="24-hour local time, e.g. 08:00")]
    timezone: Annotated[str, Text(64, min_length=1, description="IANA time zone, e.g. Europe/Paris")]


class WeeklySlotOut(BaseModel):
    weekday: str
    time: str
    timezone: str
    description: str
    next_at: datetime


PRIVATE = (
    "A private list is not on the public home page, and its subscribe form and archive answer 404; "
    "admins and the API still add people to it."
)


TRACKING = (
    "Opens and clicks of the list's sends from now on: off (no image, links as written: only delivery "
    "figures), anonymous (counted per send and link, tied to no one), individual (also kept per subscriber "
    "for NEWSLETTER_TRACKING_RETENTION_DAYS)."
)


def _tracking(value: str) -> Tracking:
    """One of the choices exactly as written (``subscribers.lists.parse_tracking`` says which they are)."""
    try:
        chosen = parse_tracking(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    if chosen.value != value:  # parse_tracking forgives case and spaces; the schema's enum does not
        raise ValueError(f"tracking must be one of {', '.join(Tracking)}, not {value!r}")
    return chosen


TrackingChoice = Annotated[
    str,
    AfterValidator(_tracking),
    WithJsonSchema({"type": "string", "enum": [t.value for t in Tracking], "description": TRACKING}),
]

LANGUAGE = (
    "The language of the list's emails (the confirmation and other notices, the footer of the sends started "
    "from now on) and of its pages for readers whose browser asks for none of the shipped languages: " + choices() + "."
)


def _language(value: str) -> str:
    """A shipped language's code exactly as written (``newsletter.locales.languages.parse_language``)."""
    try:
        chosen = parse_language(value, where="language")
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    if chosen != value:  # parse_language forgives case and spaces; the schema's enum does not
        raise ValueError(f"language must be one of {choices()}, not {value!r}")
    return chosen


LanguageChoice = Annotated[
    str,
    AfterValidator(_language),
    WithJsonSchema({"type": "string", "enum": list(SHIPPED), "description": LANGUAGE}),
]


LIST_TEMPLATE = (
    "The email layout of the list's issues: a stored template's name (GET /api/templates), or 'issue' "
    "for the shipped one; an issue naming its own template keeps it."
)
ListTemplate = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description=LIST_TEMPLATE)]


class ListCreate(Strict):
    slug: Slug
    name: Annotated[str, Text(200, min_length=1)]
    from_email: Email
    from_name: Annotated[str, Text(200)] = ""
    reply_to: Email | None = None
    description: Annotated[str, Text(5000)] = ""
    private: bool = Field(False, strict=True, description=PRIVATE)
    tracking: TrackingChoice = Tracking.OFF
    language: LanguageChoice = SOURCE
    template: ListTemplate = "issue"


class ListUpdate(Strict):
    """Only the fields given change; ``reply_to: ""`` removes the reply-to, ``slot: null`` the weekly slot."""

    name: Annotated[str, Text(200, min_length=1)] | None = None
    from_email: Email | None = None
    from_name: Annotated[str, Text(200)] | None = None
    reply_to: Annotated[str, Text(320)] | None = None
    description: Annotated[str, Text(5000)] | None = None
    private: bool | None = Field(None, strict=True, description=PRIVATE + " null or absent: unchanged.")
    tracking: TrackingChoice | None = None
    language: LanguageChoice | None = None
    template: ListTemplate | None = Field(None, description=LIST_TEMPLATE + " null or absent: unchanged.")
    slot: WeeklySlotIn | None = None


class SubscriptionCounts(BaseModel):
    unconfirmed: int
    confirmed: int
    unsubscribed: int


class ListOut(BaseModel):
    slug: str
    name: str
    from_email: str
    from_name: str
    reply_to: str | None
    description: str
    private: bool = Field(description=PRIVATE)
    tracking: Tracking = Field(description=TRACKING)
    language: str = Field(description=LANGUAGE, json_schema_extra={"enum": list(SHIPPED)})
    template: str = Field(description=LIST_TEMPLATE)
    slot: WeeklySlotOut | None
    counts: SubscriptionCounts
    total: int
    created_at: datetime


class ListsOut(BaseModel):
    items: list[ListOut]


# --- subscribers --------------------------------------------------------------------------


AttributeValue = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_safe)] | int | float | bool
AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_safe)]


class SubscriberUpdate(Strict):
    """Only the fields given change; ``attributes`` replaces them all."""

    email: Email | None = None
    name: Annotated[str, Text(200)] | None = None
    attributes: Annotated[dict[AttributeName, AttributeValue], Field(max_length=100)] | None = None


class SubscriptionIn(Strict):
    status: Literal[SubscriptionStatus.CONFIRMED, SubscriptionStatus.UNSUBSCRIBED] = Field(
        SubscriptionStatus.CONFIRMED,
        description="confirmed: add to the list (a new consent record, source api); unsubscribed: remove.",
    )


class SubscriptionOut(BaseModel):
    list: str
    list_name: str
    status: SubscriptionStatus
    source: str
    ip: str | None
    user_agent: str | None
    requested_at: datetime
    confirmed_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None


class SubscriberOut(BaseModel):
    id: int
    email: str
    name: str
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    subscriptions: list[SubscriptionOut]
    suppressed: SuppressionReason | None = Field(description="The suppression reason, when the address is suppressed.")


class SubscriberCreate(Strict):
    list: Slug
    email: Email
    name: Annotated[str, Text(200)] = ""
    confirmed: bool = Field(
        False, strict=True, description="Record consent as already confirmed (only when you hold it)."
    )


class SubscriberPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[SubscriberOut]


# --- imports ------------------------------------------------------------------------------


class ImportJobOut(BaseModel):
    id: int
    list: str
    filename: str
    confirmed: bool
    status: ImportStatus
    size_bytes: int
    rows_read: int
    imported: int
    updated: int
    unchanged: int
    kept_unsubscribed: int
    rejected: int
    error: str | None = Field(description="Why the import failed (naming FILE:LINE); nothing was imported then.")
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    has_report: bool = Field(description="Whether rows were rejected: GET report_url for them (line, reason).")
    report_url: str


class ImportJobsOut(BaseModel):
    items: list[ImportJobOut]


# --- media --------------------------------------------------------------------------------


class MediaOut(BaseModel):
    id: int
    name: str = Field(description="The stored file's name: the SHA-256 of its bytes and its extension.")
    filename: str = Field(description="The name it was uploaded with (shown only; never used to store it).")
    url: str = Field(description="Where it is served: NEWSLETTER_BASE_URL/media/<name>, cached for a year.")
    markdown: str = Field(description="The Markdown that shows it in an issue.")
    content_type: str
    width: int
    height: int
    bytes: int
    created_at: datetime
    uploader: str


class MediaListOut(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[MediaOut]


class IssueRef(BaseModel):
    id: int
    subject: str


class MediaDeletedOut(BaseModel):
    deleted: MediaOut
    drafts: list[IssueRef] = Field(description="Draft issues that still refer to it (their image is gone).")


# --- suppressions -------------------------------------------------------------------------


class SuppressionIn(Strict):
    email: Email
    reason: SuppressionReason = SuppressionReason.ADMIN
    note: Annotated[str, Text(2000)] = ""


class SuppressionOut(BaseModel):
    email: str
    reason: SuppressionReason
    note: str
    created_at: datetime


class SuppressionsOut(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[SuppressionOut]


# --- issues -------------------------------------------------------------------------------

Subject = Annotated[str, Text(998, min_length=1, description="One line, no control characters.")]
Preheader = Annotated[str, Text(500, description="The line mail clients show after the subject.")]
TemplateName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", description="A template set name.")]
Markdown = Annotated[str, Text(200_000, description="The body, in Markdown.")]


class IssueFields(Strict):
    subject: Subject
    preheader: Preheader = ""
    template: TemplateName = "issue"
    body_markdown: Markdown


class IssueCreate(IssueFields):
    list: Slug


Revision = Annotated[
    int | None,
    Field(
        default=None,
        ge=1,
        description="The issue's revision this change is based on (from GET): when the issue was saved since, "
        "the change is refused with 409 and nothing is written. Without it the change replaces whatever is stored.",
    ),
]


class IssueUpdate(IssueFields):
    revision: Revision = None


class IssueText(Strict):
    markdown: Annotated[
        str,
        Text(
            200_000,
            min_length=1,
            description="An issue file: YAML front matter (subject, preheader, template) between '---' lines, then the body.",
        ),
    ]


class IssueTextCreate(IssueText):
    list: Slug


class IssueTextUpdate(IssueText):
    revision: Revision = None


class ProblemOut(BaseModel):
    level: Literal["error", "warning"]
    message: str
    where: str | None


class IssueSummary(BaseModel):
    id: int
    list: str
    status: IssueStatus
    subject: str
    created_at: datetime
    updated_at: datetime


class IssuesOut(BaseModel):
    items: list[IssueSummary]


class IssueOut(IssueSummary):
    revision: int = Field(description="Counts the saves of the content; send it back with a change (see PUT).")
    preheader: str
    template: str
    body_markdown: str
    problems: list[ProblemOut] = Field(description="What the checks find: errors stop a send, warnings do not.")


def _listed(value: object) -> object:
    return [value] if isinstance(value, str) else value


class TestSendIn(Strict):
    # One address or a list: read as a list, so that every error names "to" (or "to.N") plainly.
    to: Annotated[
        list[Email],
        BeforeValidator(_listed),
        Field(min_length=1, max_length=10),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "format": "email", "minLength": 1, "maxLength": 320},
                    {
                        "type": "array",
                        "items": {"type": "string", "format": "email", "minLength": 1, "maxLength": 320},
                        "minItems": 1,
                        "maxItems": 10,
                    },
                ],
                "description": "An address, or a list of 1 to 10; one that is not an address is refused (400, nothing sent).",
            }
        ),
    ]


class TestCopyOut(BaseModel):
    to: str
    sent: bool = Field(description="Whether the SMTP server took this copy.")
    message_id: str
    smtp_code: int | None = Field(description="The server's reply code (none when it could not be reached).")
    smtp_reply: str = Field(description="The server's reply, or why this copy was not sent.")


class TestSendOut(BaseModel):
    copies: list[TestCopyOut] = Field(description="One per address, in the order given (repeats once).")


# --- sends --------------------------------------------------------------------------------


class SendCreate(Strict):
    issue_id: Id
    list: Slug | None = Field(None, description="Send to this list instead of the issue's own.")
    at: Moment | None = Field(None, description="Start at this time (ISO 8601 with a UTC offset) instead of now.")
    repeat: Literal["again", "only_new"] | None = Field(
        None,
        description=(
            "When the list already has a send of this issue (anything but cancelled), the request is refused "
            'with 409 unless this says what to do: "again" sends to every confirmed subscriber again, '
            '"only_new" only to those who got no copy of the issue in any earlier send.'
        ),
    )


class SubjectTestIn(Strict):
    """A subject test: ``share`` % of the recipients (chosen at random) get the issue's subject (A) or ``subject`` (B),
    half each; after ``decide_after`` the scheduler sends the winner to the rest."""

    subject: Annotated[str, Text(998, 1, description="The other subject (B).")]
    share: int = Field(20, ge=1, le=100, description="Percent of the recipients in the test.")
    decide_after: Annotated[
        str,
        Text(20, 1, description='When the test is decided, after the send starts: "2h", "90m", "1h30m", "1d", "0s".'),
    ] = "4h"


class SubjectTestDecide(Strict):
    winner: Literal["A", "B", "a", "b"] | None = Field(
        None, description="Pick the winner; without it the figures so far decide (clicks, then opens, then A)."
    )


class SubjectTestOut(BaseModel):
    """A send's subject test, as `newsletter sends status ID --json` shows it."""

    state: Literal["planned", "testing", "decided", "cancelled"]
    subject_a: str = Field(description="The issue's own subject.")
    subject_b: str
    share: int = Field(description="Percent of the recipients in the test.")
    decide_after_seconds: int
    decide_at: str | None = Field(json_schema_extra={"format": "date-time"})
    recipients_a: int
    recipients_b: int
    remainder: int = Field(description="The rest of the recipients, who get the winner.")
    winner: Literal["A", "B"] | None
    decided_at: str | None = Field(json_schema_extra={"format": "date-time"})
    decided_by: str | None = Field(description='"scheduler", or who decided early or cancelled the rest.')
    reason: str | None = Field(description="Why the winner won (the figures), or why the rest was cancelled.")
    line: str = Field(description="Where the test stands, in one sentence.")


class SendReschedule(Strict):
    at: Moment


class SendOut(BaseModel):
    id: int
    issue_id: int
    list: str
    status: SendStatus
    status_reason: str | None
    audience: SendAudience = Field(
        description="Who it mails: every confirmed subscriber (all) or only those with no copy of the issue yet (new)."
    )
    subject: str
    total: int
    pending: int
    sent: int
    failed: int
    skipped: int
    bounced: int
    cancelled: int
    scheduled_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    subject_test: SubjectTestOut | None = Field(default=None, description="Its subject test, if it has one.")
    problem: str | None = Field(
        default=None,
        description="Null while the send moves (or is done); otherwise one sentence saying why it is stuck and "
        "what to do: no worker running, workers busy or stuck, the SMTP server unreachable (host:port, the error, "
        "the next try), paused for too many errors (the last SMTP replies), the broker unreachable.",
    )


class SendsOut(BaseModel):
    items: list[SendOut]


class DeliveryOut(BaseModel):
    id: int
    email: str
    status: DeliveryStatus
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    message_id: str | None
    sent_at: datetime | None
    updated_at: datetime


class DeliveryPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[DeliveryOut]


# --- reports ------------------------------------------------------------------------------


class FiguresOut(BaseModel):
    unique: int = Field(description="People: unique readers.")
    total: int = Field(description="People: every one.")
    machine_unique: int = Field(description="Machines (privacy proxies, prefetchers, scanners): unique readers.")
    machine_total: int = Field(description="Machines: every one.")


class LinkFiguresOut(BaseModel):
    position: int = Field(description="The link's number in the issue (1: the first).")
    url: str
    unique: int = Field(description="People who followed it.")
    total: int = Field(description="People's clicks on it.")
    machine: int = Field(description="Machines' clicks on it.")


class HourFiguresOut(BaseModel):
    hour: str = Field(json_schema_extra={"format": "date-time"}, description="The hour's start, UTC.")
    opens: int
    unique_opens: int = Field(description="Readers whose first open fell in this hour.")
    clicks: int
    unique_clicks: int = Field(description="Readers whose first click fell in this hour.")


class VariantFiguresOut(BaseModel):
    variant: Literal["A", "B"]
    subject: str
    recipients: int = Field(description="The test share's recipients with this subject.")
    delivered: int
    opens: int = Field(description="Unique human openers.")
    clicks: int = Field(description="Unique human clickers.")
    open_rate: float | None = Field(description="Unique human openers over delivered.")
    click_rate: float | None = Field(description="Unique human clickers over delivered.")


class SubjectTestReportOut(BaseModel):
    state: Literal["planned", "testing", "decided", "cancelled"]
    share: int = Field(description="Percent of the recipients in the test.")
    remainder: int = Field(description="The rest of the recipients, who get (got) the winner.")
    decide_at: str | None = Field(json_schema_extra={"format": "date-time"})
    decided_at: str | None = Field(json_schema_extra={"format": "date-time"})
    decided_by: str | None
    winner: Literal["A", "B"] | None
    reason: str | None = Field(description="Why the winner won, with the figures, or why the rest was cancelled.")
    variants: builtins.list[VariantFiguresOut] = Field(description="A then B, the figures now.")
    decided_on: builtins.list[VariantFiguresOut] | None = Field(description="A then B, the figures it was decided on.")


class SendReportOut(BaseModel):
    """Exactly what `newsletter sends report ID --json` prints (README, "Engagement reports")."""

    send_id: int
    list: str = Field(description="The list's slug.")
    subject: str
    status: SendStatus
    tracking: Tracking = Field(description="As frozen on the send when it started.")
    started_at: str | None = Field(json_schema_extra={"format": "date-time"})
    recipients: int = Field(description="Copies the send was to make (its snapshot).")
    delivered: int = Field(description="Copies accepted by the SMTP server, less those that bounced later.")
    pending: int
    failed: int
    bounced: int
    complaints: int
    unsubscribes: int = Field(
        description="People the send reached who left the list after it started and before the next send started."
    )
    opens: FiguresOut
    clicks: FiguresOut
    open_rate: float | None = Field(description="Unique human opens over delivered (an estimate).")
    click_through_rate: float | None = Field(description="Unique human clickers over delivered.")
    click_to_open_rate: float | None = Field(description="Unique human clickers over unique human openers.")
    links: builtins.list[LinkFiguresOut] = Field(description="Most clicked first.")
    timeline: builtins.list[HourFiguresOut] = Field(
        description="People's opens and clicks per hour of the first 7 days."
    )
    rolled_up: bool = Field(description="The report window closed: the figures are the rolled-up hourly counts.")
    note: str = Field(description="That open rates are estimates, or that tracking was off.")
    subject_test: SubjectTestReportOut | None = Field(description="Its subject test, if it had one.")
