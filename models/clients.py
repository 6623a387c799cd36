"""Clients (the main account holders) and their contacts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, func, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class ClientStatus(StrEnum):
    ACTIVE = "Active"  # can log in, has active services
    INACTIVE = "Inactive"  # can log in, no active services
    CLOSED = "Closed"  # cannot log in


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firstname: Mapped[str] = mapped_column(String(100))
    lastname: Mapped[str] = mapped_column(String(100))
    companyname: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    address1: Mapped[str] = mapped_column(String(255))
    address2: Mapped[str | None] = mapped_column(String(255))
    city: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(100))
    postcode: Mapped[str] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2))
    phonenumber: Mapped[str] = mapped_column(String(32))
    tax_id: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=ClientStatus.ACTIVE)
    # Kept consistent by services.contacts (same client, cleared on delete); no FK because
    # clients and contacts would then reference each other.
    billing_contact_id: Mapped[str | None] = mapped_column(String(64))
    # The holder's own choice per email category (WHMCS later let holders untick them), each
    # on by default: `<category>_emails`, named after invoice_emails, which came first and is
    # the invoice one. A category the business requires reaches the holder whatever its flag
    # says (services/routing.py); the billing contact and ticked contacts are not affected.
    general_emails: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    product_emails: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    domain_emails: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    invoice_emails: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    support_emails: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    contacts: Mapped[list[Contact]] = relationship(
        back_populates="client", order_by="Contact.created_at", cascade="all, delete-orphan"
    )

    __table_args__ = (
        # "Duplicate Email Address" is decided case-insensitively, and the database has the
        # last word when two adds race.
        Index("uq_clients_email_lower", func.lower(email), unique=True),
    )

    @property
    def full_name(self) -> str:
        return f"{self.firstname} {self.lastname}"

    def holder_wants(self, category: str) -> bool:
        """The holder's own flag for `category` (required categories override it)."""
        return bool(getattr(self, holder_flag(category)))


def holder_flag(category: str) -> str:
    """The client column holding the holder's choice for an email category."""
    return f"{category}_emails"


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    firstname: Mapped[str] = mapped_column(String(100))
    lastname: Mapped[str] = mapped_column(String(100))
    companyname: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    address1: Mapped[str | None] = mapped_column(String(255))
    address2: Mapped[str | None] = mapped_column(String(255))
    city: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str | None] = mapped_column(String(100))
    postcode: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(2))
    phonenumber: Mapped[str | None] = mapped_column(String(32))
    # The five WHMCS email categories (generalemails, productemails, ...).
    general: Mapped[bool] = mapped_column(Boolean, default=False)
    product: Mapped[bool] = mapped_column(Boolean, default=False)
    domain: Mapped[bool] = mapped_column(Boolean, default=False)
    invoice: Mapped[bool] = mapped_column(Boolean, default=False)
    support: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    client: Mapped[Client] = relationship(back_populates="contacts")

    @property
    def full_name(self) -> str:
        return f"{self.firstname} {self.lastname}"

    def receives(self, category: str) -> bool:
        return bool(getattr(self, category))
