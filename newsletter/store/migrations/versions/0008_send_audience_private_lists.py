"""send audience and private lists

``sends.audience`` says who a send mails: 'all' (every confirmed, unsuppressed
subscriber) or 'new' (only those who got no copy of the issue in an earlier send: the
"new since last time" resend). Existing sends mailed everyone: 'all'.

``mailing_lists.private``: a private list is not shown on the public home page and cannot
be joined through the public form; admins and the API still add people. Existing lists
stay public.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audience", sa.String(length=8), nullable=False, server_default="all"))
        batch_op.create_check_constraint(op.f("ck_sends_audience"), sa.text("audience IN ('all', 'new')"))
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_column("private")
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_sends_audience"), type_="check")
        batch_op.drop_column("audience")
