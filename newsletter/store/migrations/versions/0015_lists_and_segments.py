"""several lists at once, and segments: send_lists, deliveries.list_id, segments, a send's segment

A send mails its own list (``sends.list_id``, the primary one) and, for a send to several
lists, each list in ``send_lists``; its deliveries then carry the list whose unsubscribe link
each copy has (``deliveries.list_id``, NULL for a send to one list, so existing rows and every
single-list send stay as they were). A list's saved segments (``segments``) are filters over
its subscribers; a send records the one it used (``sends.segment_id``) and keeps its name and
filter text as they were (``segment_name``, ``segment_filter``).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import newsletter.store.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = newsletter.store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", Id, nullable=False),
        sa.Column("list_id", Id, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["mailing_lists.id"], name=op.f("fk_segments_list_id_mailing_lists"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("list_id", "name", name="uq_segments_list_name"),
    )
    op.create_table(
        "send_lists",
        sa.Column("send_id", Id, nullable=False),
        sa.Column("list_id", Id, nullable=False),
        sa.ForeignKeyConstraint(
            ["send_id"], ["sends.id"], name=op.f("fk_send_lists_send_id_sends"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["list_id"], ["mailing_lists.id"], name=op.f("fk_send_lists_list_id_mailing_lists"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("send_id", "list_id", name=op.f("pk_send_lists")),
    )
    op.create_index("ix_send_lists_list", "send_lists", ["list_id"])
    # A nullable column without a default: PostgreSQL adds it without rewriting the table.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("list_id", Id, server_default=sa.text("NULL"), nullable=True))
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segment_id", Id, server_default=sa.text("NULL"), nullable=True))
        batch_op.add_column(
            sa.Column("segment_name", sa.String(length=100), server_default=sa.text("NULL"), nullable=True)
        )
        batch_op.add_column(sa.Column("segment_filter", sa.Text(), server_default=sa.text("NULL"), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_sends_segment_id_segments"), "segments", ["segment_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_sends_segment_id_segments"), type_="foreignkey")
        batch_op.drop_column("segment_filter")
        batch_op.drop_column("segment_name")
        batch_op.drop_column("segment_id")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("list_id")
    op.drop_index("ix_send_lists_list", table_name="send_lists")
    op.drop_table("send_lists")
    op.drop_table("segments")
