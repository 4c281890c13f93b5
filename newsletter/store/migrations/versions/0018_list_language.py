"""a list's language: mailing_lists.language

The language of a list's emails (the confirmation, the notices, the footer of every issue)
and of its pages when the reader's browser names none of the shipped ones. Every existing
list keeps writing English ("en"). Which codes are allowed is the application's to say
(newsletter.locales.languages.SHIPPED), so a new language needs no migration.

Revision ID: 0018
Revises: 0017
Create Date: 2027-01-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=16), server_default="en", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_column("language")
