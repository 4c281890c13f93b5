"""engagement tracking: a list's tracking choice, a send's links, opens and clicks

Lists and sends get ``tracking`` (off, the default for every existing list: nothing changes
until an admin turns it on). A tracked send numbers its links (``send_links``), keys its
readers' events with a key of its own (``sends.reader_key``), and keeps each open and click
(``engagement_events``) until its report is rolled up into hourly counts (``engagement_counts``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import newsletter.store.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = newsletter.store.models.UTCDateTime(timezone=True)
TRACKING = "tracking IN ('off', 'anonymous', 'individual')"


def upgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tracking", sa.String(length=16), server_default="off", nullable=False))
        batch_op.create_check_constraint("tracking", TRACKING)
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tracking", sa.String(length=16), server_default="off", nullable=False))
        batch_op.add_column(sa.Column("reader_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("report_rolled_up_at", When, nullable=True))
        batch_op.create_check_constraint("tracking", TRACKING)
    op.create_table(
        "send_links",
        sa.Column("send_id", Id, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["send_id"], ["sends.id"], name=op.f("fk_send_links_send_id_sends"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("send_id", "position", name=op.f("pk_send_links")),
    )
    op.create_table(
        "engagement_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("send_id", Id, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("reader", sa.String(length=32), nullable=True),
        sa.Column("subscriber_id", Id, nullable=True),
        sa.Column("at", When, nullable=False),
        sa.CheckConstraint("kind IN ('open', 'click')", name=op.f("ck_engagement_events_kind")),
        sa.CheckConstraint("origin IN ('human', 'machine')", name=op.f("ck_engagement_events_origin")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engagement_events")),
    )
    op.create_index("ix_engagement_events_send_reader", "engagement_events", ["send_id", "reader", "at"])
    op.create_index("ix_engagement_events_subscriber", "engagement_events", ["subscriber_id"])
    op.create_table(
        "engagement_counts",
        sa.Column("send_id", Id, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("hour", When, nullable=False),
        sa.Column("unique_count", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('open', 'click')", name=op.f("ck_engagement_counts_kind")),
        sa.CheckConstraint("origin IN ('human', 'machine')", name=op.f("ck_engagement_counts_origin")),
        sa.ForeignKeyConstraint(
            ["send_id"], ["sends.id"], name=op.f("fk_engagement_counts_send_id_sends"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("send_id", "kind", "position", "origin", "hour", name=op.f("pk_engagement_counts")),
    )


def downgrade() -> None:
    op.drop_table("engagement_counts")
    op.drop_index("ix_engagement_events_subscriber", table_name="engagement_events")
    op.drop_index("ix_engagement_events_send_reader", table_name="engagement_events")
    op.drop_table("engagement_events")
    op.drop_table("send_links")
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_constraint("tracking", type_="check")
        batch_op.drop_column("report_rolled_up_at")
        batch_op.drop_column("reader_key")
        batch_op.drop_column("tracking")
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_constraint("tracking", type_="check")
        batch_op.drop_column("tracking")
