"""The holder's email preferences for the four other categories, and the one-click
unsubscribe URL of each logged email.

The holder's invoice flag is the existing `invoice_emails` column, kept as it is (its values,
and its name in clients.add and clients.update); the other four are added beside it, on for
every existing holder, who until now received every category.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOLDER_FLAGS = ("general_emails", "product_emails", "domain_emails", "support_emails")


def upgrade() -> None:
    # Plain ADD COLUMNs, also on SQLite: batch mode would rebuild `clients` and lose the
    # lower(email) unique index, which SQLite cannot reflect (as in 0004).
    for name in HOLDER_FLAGS:
        op.add_column(
            "clients", sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.true())
        )
    # Emails logged before it carry no header: they were queued without a link.
    op.add_column("email_messages", sa.Column("list_unsubscribe", sa.String(977), nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place, keeping the expression index.
    op.drop_column("email_messages", "list_unsubscribe")
    for name in reversed(HOLDER_FLAGS):
        op.drop_column("clients", name)
