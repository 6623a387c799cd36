"""Task outcome counters per minute and the log of scheduled runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "task_stats",
        sa.Column("bucket", Timestamp, nullable=False),
        sa.Column("task_name", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("runtime_total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "task_name", "outcome", name=op.f("pk_task_stats")),
    )
    op.create_table(
        "scheduled_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("run_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_runs")),
    )
    op.create_index(op.f("ix_scheduled_runs_name"), "scheduled_runs", ["name"])
    op.create_index(op.f("ix_scheduled_runs_started_at"), "scheduled_runs", ["started_at"])


def downgrade() -> None:
    op.drop_table("scheduled_runs")
    op.drop_table("task_stats")
