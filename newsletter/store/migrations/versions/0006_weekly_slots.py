"""weekly slots: a list's weekday, time and time zone for issues marked ready

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slot_weekday", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("slot_time", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("slot_timezone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_column("slot_timezone")
        batch_op.drop_column("slot_time")
        batch_op.drop_column("slot_weekday")
