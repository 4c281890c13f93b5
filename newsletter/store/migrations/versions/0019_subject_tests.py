"""subject tests: subject_tests, deliveries.variant, engagement_events.variant

A send may test a second subject line on a share of its recipients before the rest get the
winner (``subject_tests``, one row per send that has a test). The test share's delivery rows
carry the subject their copy had (``deliveries.variant``: 1 for the issue's own subject, 2 for
the other) and so do their readers' opens and clicks (``engagement_events.variant``). Both
columns are nullable without a default: PostgreSQL adds them without rewriting the tables, and
every existing row, and every row of a send without a test, stays NULL.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import newsletter.store.models

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = newsletter.store.models.UTCDateTime(timezone=True)
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STATES = "state IN ('planned', 'testing', 'decided', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "subject_tests",
        sa.Column("send_id", Id, nullable=False),
        sa.Column("subject_b", sa.String(length=998), nullable=False),
        sa.Column("share", sa.Integer(), nullable=False),
        sa.Column("decide_after", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decide_at", When, nullable=True),
        sa.Column("recipients_a", sa.Integer(), nullable=False),
        sa.Column("recipients_b", sa.Integer(), nullable=False),
        sa.Column("remainder", sa.Integer(), nullable=False),
        sa.Column("winner", sa.SmallInteger(), nullable=True),
        sa.Column("decided_at", When, nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("figures", Json, nullable=True),
        sa.Column("final_figures", Json, nullable=True),
        sa.CheckConstraint(STATES, name=op.f("ck_subject_tests_state")),
        sa.CheckConstraint("share BETWEEN 1 AND 100", name=op.f("ck_subject_tests_share")),
        sa.CheckConstraint("winner IN (1, 2)", name=op.f("ck_subject_tests_winner")),
        sa.ForeignKeyConstraint(
            ["send_id"], ["sends.id"], name=op.f("fk_subject_tests_send_id_sends"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("send_id", name=op.f("pk_subject_tests")),
    )
    op.create_index("ix_subject_tests_state_decide_at", "subject_tests", ["state", "decide_at"])
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.SmallInteger(), server_default=sa.text("NULL"), nullable=True))
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.SmallInteger(), server_default=sa.text("NULL"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.drop_column("variant")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("variant")
    op.drop_index("ix_subject_tests_state_decide_at", table_name="subject_tests")
    op.drop_table("subject_tests")
