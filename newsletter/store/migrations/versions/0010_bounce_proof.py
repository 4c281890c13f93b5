"""bounce proof: events that proved nothing are kept for review, apart

``bounce_events.proven``: whether the event carried proof that we mailed the address (a
signed VERP return path, the Message-ID of a delivery or confirmation email to that
address, a signed link of ours in the quoted original, a signed List-Unsubscribe mailto
token). Only proven events act (bounce, suppress, unsubscribe) and count toward
NEWSLETTER_SOFT_BOUNCE_LIMIT; the others are stored with ``proven`` false and change
nothing. Every event stored before this revision was acted on: true.

Downgrading deletes the unproven events first: the old code knows no such thing and
would count them, so an old soft bounce nobody proved could then suppress an address.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("proven", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM bounce_events WHERE NOT proven"))
    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.drop_column("proven")
