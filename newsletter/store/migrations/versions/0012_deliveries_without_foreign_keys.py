"""deliveries: no foreign keys to sends and subscribers (the send log is written a million rows at a time)

A send's snapshot inserts one delivery row per recipient in one statement. On PostgreSQL each
foreign key is a trigger that looks the referenced row up and locks it, row by row: at
1,000,000 recipients the two keys cost 7.7 of the snapshot's 12.3 s (sends 3.4 s, subscribers
4.3 s), more than writing the rows and their indexes (5.4 s). Neither key guarded anything the
code does not already: sends are never deleted (their issue and list refuse deletion while a
send refers to them, and nothing deletes a send), and a subscriber with logged deliveries is
kept as an anonymous tombstone when erased. The one race a key closed, an erasure committing
while a snapshot is writing that subscriber's row, is closed by a lock the two take
(newsletter.store.erasure_lock).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("fk_deliveries_send_id_sends", type_="foreignkey")
        batch_op.drop_constraint("fk_deliveries_subscriber_id_subscribers", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_foreign_key("fk_deliveries_send_id_sends", "sends", ["send_id"], ["id"], ondelete="CASCADE")
        batch_op.create_foreign_key(
            "fk_deliveries_subscriber_id_subscribers", "subscribers", ["subscriber_id"], ["id"], ondelete="CASCADE"
        )
