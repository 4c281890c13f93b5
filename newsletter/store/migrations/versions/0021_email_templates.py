"""email templates: layouts admins store, chosen per list (and per issue, by its template name)

``email_templates`` holds each stored layout's HTML and text Jinja2 source, who changed it
last and when. ``mailing_lists.template`` names the layout of a list's issues (NULL, as for
every existing list: the shipped layout); an issue's existing ``template`` column still names
its own, which wins over the list's.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

import newsletter.store.models

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = newsletter.store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "email_templates",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_email_templates_name")),
    )
    # A nullable column without a default: PostgreSQL adds it without rewriting the table.
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("template", sa.String(length=64), server_default=sa.text("NULL"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_column("template")
    op.drop_table("email_templates")
