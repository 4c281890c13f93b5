"""delay warnings: bounce events of kind 'delayed'

A delay warning (a DSN with ``Action: delayed``, "still trying" notices, SES
DeliveryDelay) is kept as an event of its own kind, which bounces nothing and counts
toward nothing. This widens the CHECK constraint ``ck_bounce_events_kind`` to allow it;
the events already stored stay as they are.

Downgrading deletes the 'delayed' events first, since the old constraint forbids them.
They are not turned into 'soft' ones: the old code would count those toward
NEWSLETTER_SOFT_BOUNCE_LIMIT, and a downgrade should not start suppressing addresses
because of warnings about mail that was still on its way.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_KINDS = "kind IN ('hard', 'soft', 'complaint', 'unsubscribe')"
NEW_KINDS = "kind IN ('hard', 'soft', 'delayed', 'complaint', 'unsubscribe')"


def upgrade() -> None:
    # SQLite cannot alter a constraint: batch mode copies the table (its index and foreign key too).
    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_bounce_events_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_bounce_events_kind"), sa.text(NEW_KINDS))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM bounce_events WHERE kind = 'delayed'"))
    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_bounce_events_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_bounce_events_kind"), sa.text(OLD_KINDS))
