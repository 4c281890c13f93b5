"""requests to confirm: runs, their per-recipient log, and when each subscription was last asked

``confirmation_runs``: one `newsletter lists request-confirmation SLUG` (or its API call or
admin button): the list, who started it, how many were queued and how many were left out
and why. ``confirmation_mails``: one row per recipient, logged like a send's deliveries
(status, attempts, SMTP reply, Message-ID, times) and claimed by the worker that mails it.

``subscriptions.confirmation_requested_at``: when a confirmation email last went out to the
subscription, so nobody is asked twice within a week. Existing subscriptions were never
asked by a run; the form's earlier emails were not recorded: NULL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

import newsletter.store.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "confirmation_requested_at",
                newsletter.store.models.UTCDateTime(timezone=True),
                nullable=True,
                server_default=sa.text("NULL"),
            )
        )
    op.create_table(
        "confirmation_runs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("list_id", _ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("again", sa.Boolean(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("asked_recently", sa.Integer(), nullable=False),
        sa.Column("suppressed", sa.Integer(), nullable=False),
        sa.Column("already_queued", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", newsletter.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", newsletter.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('sending', 'finished')", name=op.f("ck_confirmation_runs_status")),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name=op.f("fk_confirmation_runs_list_id_mailing_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmation_runs")),
    )
    with op.batch_alter_table("confirmation_runs", schema=None) as batch_op:
        batch_op.create_index("ix_confirmation_runs_list", ["list_id", "id"], unique=False)
    op.create_table(
        "confirmation_mails",
        sa.Column("id", _ID, nullable=False),
        sa.Column("run_id", _ID, nullable=False),
        sa.Column("subscription_id", _ID, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("smtp_reply", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("next_attempt_at", newsletter.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claim_expires", newsletter.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", newsletter.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", newsletter.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'skipped')", name=op.f("ck_confirmation_mails_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["confirmation_runs.id"],
            name=op.f("fk_confirmation_mails_run_id_confirmation_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_confirmation_mails_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmation_mails")),
        sa.UniqueConstraint("run_id", "subscription_id", name="uq_confirmation_mails_run_subscription"),
    )
    with op.batch_alter_table("confirmation_mails", schema=None) as batch_op:
        batch_op.create_index("ix_confirmation_mails_run_status", ["run_id", "status"], unique=False)
        batch_op.create_index("ix_confirmation_mails_subscription", ["subscription_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("confirmation_mails", schema=None) as batch_op:
        batch_op.drop_index("ix_confirmation_mails_subscription")
        batch_op.drop_index("ix_confirmation_mails_run_status")
    op.drop_table("confirmation_mails")
    with op.batch_alter_table("confirmation_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_confirmation_runs_list")
    op.drop_table("confirmation_runs")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("confirmation_requested_at")
