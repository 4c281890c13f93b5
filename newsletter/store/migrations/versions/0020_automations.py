"""welcome, sequence and goodbye emails: automations, automation_mails

A list's automated emails (``automations``): its welcome (when a subscription is confirmed),
the steps of its sequence (days after confirming) and its goodbye (when someone leaves by
themselves), each sending an issue of the list or the shipped text, rendered once and frozen on
the row as a send freezes its issue. Each automated email to
one subscriber is one row of ``automation_mails``, unique per (automation, subscriber): the
unit of work the workers claim, and its log (status, attempts, SMTP reply, Message-ID, times).
``subscriptions`` gets an index on (list, status, confirmed_at): the tick reads the confirmations
of a time window. Nothing existing changes.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op

import newsletter.store.models

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = newsletter.store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "automations",
        sa.Column("id", Id, nullable=False),
        sa.Column("list_id", Id, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("issue_id", Id, nullable=True),
        sa.Column("offset_days", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("also_added", sa.Boolean(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.Column("removed_at", When, nullable=True),
        sa.Column("planned_until", When, nullable=True),
        sa.Column("subject", sa.String(length=998), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("rendered_at", When, nullable=True),
        sa.CheckConstraint("kind IN ('welcome', 'step', 'goodbye')", name=op.f("ck_automations_kind")),
        sa.ForeignKeyConstraint(
            ["list_id"], ["mailing_lists.id"], name=op.f("fk_automations_list_id_mailing_lists"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["issues.id"], name=op.f("fk_automations_issue_id_issues"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automations")),
    )
    op.create_index("ix_automations_list", "automations", ["list_id", "kind"])
    op.create_table(
        "automation_mails",
        sa.Column("id", Id, nullable=False),
        sa.Column("automation_id", Id, nullable=False),
        sa.Column("list_id", Id, nullable=False),
        sa.Column("subscriber_id", Id, nullable=False),
        sa.Column("issue_id", Id, nullable=True),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("smtp_reply", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("next_attempt_at", When, nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claim_expires", When, nullable=True),
        sa.Column("sent_at", When, nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed', 'skipped')", name=op.f("ck_automation_mails_status")
        ),
        sa.ForeignKeyConstraint(
            ["automation_id"],
            ["automations.id"],
            name=op.f("fk_automation_mails_automation_id_automations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name=op.f("fk_automation_mails_list_id_mailing_lists"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_automation_mails_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automation_mails")),
        sa.UniqueConstraint("automation_id", "subscriber_id", name="uq_automation_mails_automation_subscriber"),
    )
    op.create_index("ix_automation_mails_status", "automation_mails", ["status", "automation_id", "id"])
    op.create_index("ix_automation_mails_subscriber_list", "automation_mails", ["subscriber_id", "list_id", "status"])
    op.create_index("ix_automation_mails_list", "automation_mails", ["list_id", "id"])
    # The confirmations of a list within a time window (the steps due now), without reading the whole list.
    op.create_index("ix_subscriptions_list_status_confirmed", "subscriptions", ["list_id", "status", "confirmed_at"])


def downgrade() -> None:
    op.drop_index("ix_subscriptions_list_status_confirmed", table_name="subscriptions")
    op.drop_index("ix_automation_mails_list", table_name="automation_mails")
    op.drop_index("ix_automation_mails_subscriber_list", table_name="automation_mails")
    op.drop_index("ix_automation_mails_status", table_name="automation_mails")
    op.drop_table("automation_mails")
    op.drop_index("ix_automations_list", table_name="automations")
    op.drop_table("automations")
