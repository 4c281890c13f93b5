"""Suppressions: addresses that are never mailed, on any list."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.errors import InvalidInput, NotFound
from newsletter.store.db import rowcount
from newsletter.store.models import Suppression
from newsletter.store.states import SuppressionReason
from subscribers.addresses import normalise_email


def suppress(
    session: Session, email: str, *, reason: str = SuppressionReason.ADMIN, note: str = ""
) -> tuple[Suppression, bool]:
    """Suppress ``email``; returns the row and whether it is new. Raises InvalidInput."""
    if reason not in tuple(SuppressionReason):
        raise InvalidInput(f"unknown reason {reason!r}; use one of {', '.join(SuppressionReason)}", where="--reason")
    address = normalise_email(email)
    existing = session.scalar(select(Suppression).where(Suppression.email == address))
    if existing is not None:
        return existing, False
    row = Suppression(email=address, reason=reason, note=note)
    session.add(row)
    session.flush()
    return row, True


def unsuppress(session: Session, email: str) -> None:
    """Lift a suppression. Raises NotFound when the address is not suppressed, InvalidInput for a bad address."""
    address = normalise_email(email)
    if rowcount(session.execute(delete(Suppression).where(Suppression.email == address))) == 0:
        raise NotFound(f"{address} is not suppressed")


def all_suppressions(session: Session) -> Sequence[Suppression]:
    return session.scalars(select(Suppression).order_by(Suppression.created_at, Suppression.email)).all()


def is_suppressed(session: Session, email: str) -> bool:
    return session.scalar(select(Suppression.id).where(Suppression.email == normalise_email(email))) is not None
