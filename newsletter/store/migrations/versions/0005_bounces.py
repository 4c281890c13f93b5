"""bounces: bounce and complaint events, when a delivery bounced, the soft_bounce suppression reason

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

import newsletter.store.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = newsletter.store.models.UTCDateTime(timezone=True)
OLD_REASONS = "reason IN ('hard_bounce', 'complaint', 'unsubscribed_all', 'admin')"
NEW_REASONS = "reason IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribed_all', 'admin')"


def upgrade() -> None:
    op.create_table(
        "bounce_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("delivery_id", Id, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.CheckConstraint("kind IN ('hard', 'soft', 'complaint', 'unsubscribe')", name=op.f("ck_bounce_events_kind")),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_bounce_events_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounce_events")),
    )
    op.create_index("ix_bounce_events_email_kind", "bounce_events", ["email", "kind", "created_at"])
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bounced_at", When, nullable=True))
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_suppressions_reason"), type_="check")
        batch_op.create_check_constraint(op.f("ck_suppressions_reason"), sa.text(NEW_REASONS))


def downgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_suppressions_reason"), type_="check")
        batch_op.create_check_constraint(op.f("ck_suppressions_reason"), sa.text(OLD_REASONS))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("bounced_at")
    op.drop_index("ix_bounce_events_email_kind", table_name="bounce_events")
    op.drop_table("bounce_events")
