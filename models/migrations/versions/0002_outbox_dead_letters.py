"""The outbox, dead letters, waiting rejected events and the `sending` email claim.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_name", sa.String(64), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("published_at", Timestamp, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_created_at"), "outbox", ["created_at"])
    op.create_index(op.f("ix_outbox_published_at"), "outbox", ["published_at"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_name", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("replayed_at", Timestamp, nullable=True),
        sa.Column("replay_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_created_at"), "dead_letters", ["created_at"])
    op.create_index(op.f("ix_dead_letters_task_name"), "dead_letters", ["task_name"])

    with op.batch_alter_table("rejected_events") as batch:
        batch.add_column(sa.Column("waiting_for", sa.String(80), nullable=True))
        batch.add_column(sa.Column("released_at", Timestamp, nullable=True))
        batch.create_index(op.f("ix_rejected_events_waiting_for"), ["waiting_for"])

    with op.batch_alter_table("email_messages") as batch:
        batch.add_column(sa.Column("claimed_at", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_messages") as batch:
        batch.drop_column("claimed_at")
    with op.batch_alter_table("rejected_events") as batch:
        batch.drop_index(op.f("ix_rejected_events_waiting_for"))
        batch.drop_column("released_at")
        batch.drop_column("waiting_for")
    op.drop_table("dead_letters")
    op.drop_table("outbox")
