"""What `clientflow templates preview` renders: a template for a real client (or a sample one),
with a sample invoice, payment and notification context for the variables an event would give.

The context is built by the code the worker uses (email_context, invoice_context, invoiced_to),
so a preview shows what the client would be sent, in the client's language.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from models.base import utcnow
from models.billing import Invoice, InvoiceStatus
from models.clients import Client, ClientStatus
from models.company import CompanyLike
from services.invoice_mail import amount_text, invoice_context, invoiced_to
from services.mail.queue import email_context
from services.mail.render import RenderedEmail, render_email
from services.routing import holder_of

SAMPLE_CLIENT_ID = "SAMPLE"


def find_client(session: Session, client_id: str) -> Client | None:
    return session.get(Client, client_id)


def sample_client() -> Client:
    """A client that is never stored: for a preview without a database."""
    return Client(
        id=SAMPLE_CLIENT_ID,
        firstname="Ada",
        lastname="Lovelace",
        companyname="Analytical Engines Ltd",
        email="ada@analytical.example",
        address1="12 St James's Square",
        address2=None,
        city="London",
        state="Greater London",
        postcode="SW1Y 4JH",
        country="GB",
        phonenumber="+44 20 7946 0000",
        language=None,
        status=ClientStatus.ACTIVE,
        billing_contact_id=None,
    )


def sample_invoice(today: dt.date) -> Invoice:
    return Invoice(
        id="SAMPLE-1",
        number="INV-SAMPLE-1",
        date=today,
        due_date=today + dt.timedelta(days=14),
        currency="GBP",
        items=[
            {"description": "Web hosting, Business plan (12 months)", "amount": "1000.00"},
            {"description": "Domain renewal example.com (1 year)", "amount": "12.50"},
        ],
        subtotal=Decimal("1012.50"),
        tax=Decimal("202.50"),
        total=Decimal("1215.00"),
        balance=Decimal("1215.00"),
        status=InvoiceStatus.UNPAID,
    )


def sample_context(client: Client, today: dt.date) -> dict[str, Any]:
    """Every variable a shipped template takes from its event, with plausible values; a
    template uses the ones it names. The invoice is addressed as the client's would be."""
    invoice = sample_invoice(today)
    return {
        "invoice": invoice_context(invoice),
        "invoiced_to": invoiced_to(client),
        "payment": {
            "amount": amount_text(invoice.total),
            "date": today.isoformat(),
            "transaction_id": "TX-SAMPLE-1",
        },
        "title": "Planned maintenance",
        "message": "Our London data centre is upgrading its network on Saturday night.\n\n"
        "Services may be unreachable for up to ten minutes.",
        "service": "VPS Business",
        "headline": "rebooted after maintenance",
        "domain": "example.com",
        "expiry_date": (today + dt.timedelta(days=30)).isoformat(),
    }


def preview_email(
    name: str,
    client: Client,
    company_name: CompanyLike,
    *,
    language: str | None = None,
    extra: dict[str, Any] | None = None,
    today: dt.date | None = None,
    folders: tuple[Path, ...] | None = None,
) -> RenderedEmail:
    """`name` as the client's holder would get it; `language` instead of the client's own,
    `extra` variables over the samples (for an operator's template that needs others)."""
    context = {**sample_context(client, today or utcnow().date()), **(extra or {})}
    full = email_context(client, holder_of(client), company_name, context)
    return render_email(name, full, language=language or client.language, folders=folders)
