"""batch_claims: a worker's hold on a batch is one row, no longer a mark on each of its deliveries

Claiming a batch wrote claimed_by and claim_expires on each of its delivery rows, and on
PostgreSQL every such write is a new row version with an entry in each of the table's four
indexes: each delivery was written twice (the claim, then the outcome). With the claim as one
row per batch, a 100,000-recipient send at four workers went from 0.82-0.97 to 0.90-0.94 of the
smtplib ceiling on a 2-core machine (bench_send.py). Claims held when this runs are dropped:
stop the workers before upgrading (as for every migration).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

import newsletter.store.models

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_claims",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("send_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("first_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("last_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=False),
        sa.Column("claim_expires", newsletter.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_claims")),
    )
    op.create_index("ix_batch_claims_send_range", "batch_claims", ["send_id", "first_id", "last_id"])
    op.drop_index("ix_deliveries_claimed", table_name="deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("claim_expires")
        batch_op.drop_column("claimed_by")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("claim_expires", newsletter.store.models.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_index(
        "ix_deliveries_claimed",
        "deliveries",
        ["claimed_by"],
        postgresql_where=sa.text("claimed_by IS NOT NULL"),
        sqlite_where=sa.text("claimed_by IS NOT NULL"),
    )
    op.drop_index("ix_batch_claims_send_range", table_name="batch_claims")
    op.drop_table("batch_claims")
