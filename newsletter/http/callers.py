"""Who is asking: the API token and the admin session behind a request, found before its body is read.

Shared below site/, api/ and admin/: newsletter.http.body_limits checks the sender of every
request that needs one before the app reads a byte (and keeps the caller in the request's
state under :data:`API_CALLER_STATE` or :data:`ADMIN_CALLER_STATE`); the API's and the admin
UI's dependencies (newsletter.http.api.auth, newsletter.http.admin.auth) take it from there.
"""

from __future__ import annotations

from fastapi.security.utils import get_authorization_scheme_param

from newsletter.access.accounts import Caller, Unauthenticated, caller_for_session, caller_for_token
from newsletter.http.context import Web

#: Where body_limits keeps the API caller it found for this request: ``request.state.api_caller``.
API_CALLER_STATE = "api_caller"
#: Where body_limits keeps the admin session's caller, found before a POST's form is read.
ADMIN_CALLER_STATE = "admin_caller"
#: The admin UI's session cookie (a random id; the database keeps its hash).
SESSION_COOKIE = "newsletter_admin"
NO_TOKEN = "send an API token: 'Authorization: Bearer <token>' (newsletter admin create-token)"


def token_caller(state: Web, authorization: str | None) -> tuple[Caller, bool]:
    """The caller of an ``Authorization: Bearer ...`` header, and whether its use is due to be recorded.

    Raises Unauthenticated (401). The token is looked up in a read-only transaction, so on
    SQLite no request waits behind a long import holding the write lock; when its
    ``last_used_at`` is due for an update (once a minute), ``newsletter.http.api.auth.api_caller``
    makes that write after the response.
    """
    scheme, secret = get_authorization_scheme_param(authorization)
    if not authorization or scheme.lower() != "bearer" or not secret:
        raise Unauthenticated(NO_TOKEN)
    with state.reading() as session:
        caller = caller_for_token(session, secret)
        used = bool(session.dirty)  # last_used_at was due; reading() discards the change
    return caller, used


def session_caller(state: Web, session_id: str | None) -> Caller:
    """The logged-in user of an admin session cookie. Raises Unauthenticated (no or an unknown session)."""
    if not session_id:
        raise Unauthenticated("not logged in")
    with state.reading() as session:
        return caller_for_session(session, session_id)
