"""The invoice an email is about (`email_messages.invoice_id`), for its PDF attachment.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: emails logged before it go out as they did, without the PDF.
    op.add_column("email_messages", sa.Column("invoice_id", sa.String(96), nullable=True))


def downgrade() -> None:
    op.drop_column("email_messages", "invoice_id")
