"""What refusing hostile or contradictory input needs: the payload hash of each applied
event, payments by transaction, and waiting keys that name the client of a contact.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("processed_events", sa.Column("payload_sha256", sa.String(64)))
    # "contact:<client id>:<contact id>" takes up to 138 characters.
    with op.batch_alter_table("rejected_events") as batch:
        batch.alter_column(
            "waiting_for", type_=sa.String(160), existing_type=sa.String(80), existing_nullable=True
        )
    op.create_table(
        "invoice_payments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("invoice_id", sa.String(96), nullable=False),
        sa.Column("transaction_id", sa.String(200), nullable=True),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_payments_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_payments")),
        sa.UniqueConstraint(
            "invoice_id", "transaction_id", name="uq_invoice_payments_transaction"
        ),
    )
    op.create_index(op.f("ix_invoice_payments_invoice_id"), "invoice_payments", ["invoice_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_invoice_payments_invoice_id"), table_name="invoice_payments")
    op.drop_table("invoice_payments")
    with op.batch_alter_table("rejected_events") as batch:
        batch.alter_column(
            "waiting_for", type_=sa.String(80), existing_type=sa.String(160), existing_nullable=True
        )
    with op.batch_alter_table("processed_events") as batch:
        batch.drop_column("payload_sha256")
