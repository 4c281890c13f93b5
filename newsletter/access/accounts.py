"""Who may use the admin API and UI: API tokens, admin users, their passwords and sessions.

Roles:
    admin   everything, email templates among it ("templates": a stored template is Jinja2 that
            admins write, rendered in a sandbox, see newsletter.content.template_sandbox)
    editor  issues, the media library and sends; may read lists and templates (to choose one for an
            issue). Not a send's per-recipient delivery log ("sends:log"): it names every subscriber's
            address, so editors see counts only.

Secrets are never stored: an API token or session id is kept as its SHA-256 (they are
long random strings, so a fast hash is enough), a password as a salted scrypt hash (a
slow hash, since people choose passwords).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.errors import Conflict, InvalidInput, NotFound
from newsletter.store.models import AdminSession, AdminUser, ApiToken, utcnow
from newsletter.store.states import Role

TOKEN_PREFIX = "nl_"
SESSION_DAYS = 7
MIN_PASSWORD = 10
# scrypt at n=2**14, r=8, p=1: about 50 ms and 16 MB per check on this machine class.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")

#: What each role may do. The API and UI ask ``allowed(role, action)``.
PERMISSIONS: dict[str, frozenset[str]] = {
    Role.ADMIN: frozenset(
        {
            "lists:read",
            "lists:write",
            "subscribers",
            "imports",
            "suppressions",
            "issues",
            "media",
            "sends",
            "sends:log",
            "templates:read",
            "templates",
        }
    ),
    Role.EDITOR: frozenset({"lists:read", "issues", "media", "sends", "templates:read"}),
}
#: Reading a send's delivery log, one row per recipient with the address (API, admin UI).
DELIVERY_LOG = "sends:log"


class Unauthenticated(Exception):
    """No credentials, or wrong ones (HTTP 401)."""


class Forbidden(Exception):
    """Known caller whose role may not do this (HTTP 403). ``action`` is what the role lacks, when
    the refusal is about a role (and not, say, a form's expired CSRF token)."""

    def __init__(self, message: str, *, action: str | None = None) -> None:
        self.action = action
        super().__init__(message)


@dataclass(frozen=True)
class Caller:
    """Who is making a request: a token's or a user's name and role."""

    name: str
    role: str
    kind: str  # "token" or "user"
    user_id: int | None = None
    csrf_token: str | None = None

    def may(self, action: str) -> bool:
        return allowed(self.role, action)

    def require(self, action: str) -> None:
        if not self.may(action):
            raise Forbidden(f"the {self.role} role may not do this (needs {action!r}); ask an admin", action=action)


def allowed(role: str, action: str) -> bool:
    return action in PERMISSIONS.get(role, frozenset())


def roles_allowed(action: str) -> list[str]:
    """The roles that may do ``action``, in the order of Role."""
    return [role for role in Role if allowed(role, action)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_role(role: str) -> str:
    if role not in tuple(Role):
        raise InvalidInput(f"unknown role {role!r}; use one of {', '.join(Role)}", where="role")
    return role


def _check_name(value: str, field: str) -> str:
    value = value.strip()
    if not _NAME.match(value):
        raise InvalidInput("use 1 to 100 letters, digits or . _ @ -, starting with a letter or digit", where=field)
    return value


# --- API tokens ---------------------------------------------------------------------------


def create_token(session: Session, name: str, role: str) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the secret, which is shown once and never stored."""
    name, role = _check_name(name, "name"), _check_role(role)
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise Conflict(f"a token named {name!r} exists already; choose another name or revoke it first")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, role=role, token_hash=_digest(secret))
    session.add(row)
    session.flush()
    return row, secret


def revoke_token(session: Session, name: str) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
    if row is None:
        raise NotFound(f"no active token named {name!r}")
    row.revoked_at = utcnow()


def all_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def caller_for_token(session: Session, secret: str) -> Caller:
    """The caller a bearer token stands for. Raises Unauthenticated."""
    if not secret.startswith(TOKEN_PREFIX):
        raise Unauthenticated("not an API token (they start with nl_)")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(secret)))
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("unknown or revoked API token")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now  # at most once a minute: no write per request
    return Caller(name=row.name, role=row.role, kind="token")


# --- users and passwords --------------------------------------------------------------------


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(
        password.encode(),
        salt=bytes.fromhex(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        maxmem=_SCRYPT["maxmem"],
        dklen=len(key) // 2,
    )
    return hmac.compare_digest(actual.hex(), key)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def create_user(session: Session, username: str, password: str, role: str) -> AdminUser:
    username, role = _check_name(username, "username"), _check_role(role)
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"too short; use at least {MIN_PASSWORD} characters", where="password")
    if session.scalar(select(AdminUser.id).where(AdminUser.username == username)) is not None:
        raise Conflict(f"a user named {username!r} exists already")
    user = AdminUser(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> None:
    user = session.scalar(select(AdminUser).where(AdminUser.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"too short; use at least {MIN_PASSWORD} characters", where="password")
    user.password_hash = hash_password(password)
    session.execute(delete(AdminSession).where(AdminSession.user_id == user.id))  # log out everywhere


def all_users(session: Session) -> list[AdminUser]:
    return list(session.scalars(select(AdminUser).order_by(AdminUser.username)))


# --- sessions -------------------------------------------------------------------------------


def log_in(session: Session, username: str, password: str) -> tuple[str, Caller]:
    """Check a password; returns a new session id (for the cookie) and the caller. Raises Unauthenticated."""
    user = session.scalar(select(AdminUser).where(AdminUser.username == username.strip()))
    # Hash even for an unknown user, so the time taken does not tell which usernames exist.
    ok = verify_password(password, user.password_hash if user else _dummy_hash())
    if user is None or not ok:
        raise Unauthenticated("wrong username or password")
    now = utcnow()
    session.execute(delete(AdminSession).where(AdminSession.expires_at < now))
    session_id = secrets.token_urlsafe(32)
    row = AdminSession(
        token_hash=_digest(session_id),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now + timedelta(days=SESSION_DAYS),
    )
    session.add(row)
    user.last_login_at = now
    session.flush()
    return session_id, Caller(user.username, user.role, "user", user.id, row.csrf_token)


def caller_for_session(session: Session, session_id: str) -> Caller:
    """The logged-in user of a session cookie. Raises Unauthenticated when unknown or expired."""
    found = session.execute(
        select(AdminSession, AdminUser)
        .join(AdminUser, AdminUser.id == AdminSession.user_id)
        .where(AdminSession.token_hash == _digest(session_id))
    ).first()
    if found is None:
        raise Unauthenticated("not logged in")
    row, user = found
    if row.expires_at <= utcnow():
        raise Unauthenticated("the session has expired; log in again")
    return Caller(user.username, user.role, "user", user.id, row.csrf_token)


def log_out(session: Session, session_id: str) -> None:
    session.execute(delete(AdminSession).where(AdminSession.token_hash == _digest(session_id)))


def csrf_ok(caller: Caller, submitted: str | None) -> bool:
    if not caller.csrf_token or not submitted:
        return False
    return hmac.compare_digest(caller.csrf_token, submitted)
