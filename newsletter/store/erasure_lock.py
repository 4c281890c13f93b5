"""A send's snapshot and a subscriber's erasure exclude each other.

``deliveries`` has no foreign keys (migration 0012: checking them row by row cost a
million-recipient snapshot more than writing its rows). What a key used to do for an erasure
racing a snapshot, that is, make the erasure wait until the snapshot's rows were committed,
so it could see and anonymise them, this lock does, once per transaction instead of once per row:
the snapshot holds it shared (snapshots do not wait for each other), an erasure holds it alone.
Both are PostgreSQL transaction-level advisory locks, released at commit or rollback.

SQLite needs nothing: it lets one transaction write at a time, and a transaction that read
before another's write committed cannot write afterwards.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

# Any 64-bit number no other advisory lock of ours uses: "newslet" in ASCII.
KEY = 0x6E6577736C6574


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def hold_for_snapshot(session: Session) -> None:
    """Taken by a send's snapshot before it writes its deliveries; waits for an erasure in progress."""
    if _is_postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": KEY})


def hold_for_erasure(session: Session) -> None:
    """Taken by an erasure before it looks for the subscriber's deliveries; waits for snapshots in progress."""
    if _is_postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": KEY})
