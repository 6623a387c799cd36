"""Resends: an email an operator sent again points at the message first sent.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both dialects: nullable, no default, so no table rewrite.
    op.add_column("email_messages", sa.Column("resend_of", sa.String(length=36), nullable=True))
    op.create_index(
        "ix_email_messages_resend_of",
        "email_messages",
        ["resend_of"],
        postgresql_where=sa.text("resend_of IS NOT NULL"),
        sqlite_where=sa.text("resend_of IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_email_messages_resend_of", table_name="email_messages")
    # SQLite 3.35+ drops a column in place (no index or constraint refers to it any more).
    op.drop_column("email_messages", "resend_of")
