"""What the relay's and the invoice run's sweeps look up: queued emails by age, run heartbeats.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The relay asks every run for queued emails untouched for a while: with a backlog of
    # 160,000 queued emails, the status index alone means reading all of them.
    op.create_index(
        "ix_email_messages_status_updated_at", "email_messages", ["status", "updated_at"]
    )
    op.add_column("scheduled_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_runs") as batch:
        batch.drop_column("heartbeat_at")
    op.drop_index("ix_email_messages_status_updated_at", table_name="email_messages")
