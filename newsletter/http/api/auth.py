"""Who is calling the API: an API token sent as ``Authorization: Bearer ...``, and its role.

Only API tokens open the API (the admin UI has its own logins). A missing, unknown or
revoked token is a 401 with ``WWW-Authenticate: Bearer``; a role that may not do
something (see ``newsletter.access.accounts.PERMISSIONS``) is a 403.

The token is checked before the request's body is read (``newsletter.http.body_limits`` calls
``newsletter.http.callers.token_caller`` and keeps the caller in the request's state), so a
client without one gets its 401 at once, whatever it sends; ``api_caller`` then takes the
caller from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from newsletter.access.accounts import Caller, Unauthenticated, caller_for_token
from newsletter.http.callers import API_CALLER_STATE as CALLER_STATE
from newsletter.http.callers import NO_TOKEN, token_caller
from newsletter.http.context import Web, web

__all__ = ["CALLER_STATE", "NO_TOKEN", "allowed", "api_caller", "bearer", "token_caller"]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="An API token from `newsletter admin create-token --name NAME --role admin|editor`.",
)


def api_caller(
    request: Request,
    background: BackgroundTasks,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Caller:
    """The token's caller, as found before the body was read (else looked up now). Raises Unauthenticated (401)."""
    state = web(request)
    found: tuple[Caller, bool] | None = getattr(request.state, CALLER_STATE, None)
    if found is None:
        if credentials is None or not credentials.credentials:
            raise Unauthenticated(NO_TOKEN)
        found = token_caller(state, f"Bearer {credentials.credentials}")
    caller, used = found
    if used and credentials is not None:
        background.add_task(_record_use, state, credentials.credentials)
    return caller


def _record_use(state: Web, secret: str) -> None:
    try:
        with state.transaction() as session:
            caller_for_token(session, secret)
    except Unauthenticated:
        pass  # revoked meanwhile


def allowed(action: str) -> Callable[[Caller], Caller]:
    """A dependency: the caller, once their role may do ``action``. Raises Forbidden (403)."""

    def check(caller: Annotated[Caller, Depends(api_caller)]) -> Caller:
        caller.require(action)
        return caller

    check.__name__ = f"allowed_{action.replace(':', '_')}"
    return check


ListReader = Annotated[Caller, Depends(allowed("lists:read"))]
ListWriter = Annotated[Caller, Depends(allowed("lists:write"))]
SubscriberAdmin = Annotated[Caller, Depends(allowed("subscribers"))]
ImportAdmin = Annotated[Caller, Depends(allowed("imports"))]
SuppressionAdmin = Annotated[Caller, Depends(allowed("suppressions"))]
IssueEditor = Annotated[Caller, Depends(allowed("issues"))]
MediaEditor = Annotated[Caller, Depends(allowed("media"))]
SendEditor = Annotated[Caller, Depends(allowed("sends"))]
TemplateReader = Annotated[Caller, Depends(allowed("templates:read"))]
TemplateWriter = Annotated[Caller, Depends(allowed("templates"))]
