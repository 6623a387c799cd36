"""What the retention prune looks up, oldest first: applied events, audit rows, and emails
that still have their bodies.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_processed_events_processed_at"), "processed_events", ["processed_at"])
    op.create_index(op.f("ix_audit_events_created_at"), "audit_events", ["created_at"])
    op.create_index(
        "ix_email_messages_created_at_with_body",
        "email_messages",
        ["created_at"],
        postgresql_where=sa.text("body_html <> ''"),
        sqlite_where=sa.text("body_html <> ''"),
    )


def downgrade() -> None:
    op.drop_index("ix_email_messages_created_at_with_body", table_name="email_messages")
    op.drop_index(op.f("ix_audit_events_created_at"), table_name="audit_events")
    op.drop_index(op.f("ix_processed_events_processed_at"), table_name="processed_events")
