"""The files an email carries, made when it is delivered: the invoice PDF of the invoice
notices that attach one (services.invoice_mail.ATTACHES_PDF), when CLIENTFLOW_INVOICE_PDF is on.

Made from the invoice as it is at delivery, not as it was when the email was queued: the PDF
is the invoice document, and a client holding it should hold the current one (a payment
recorded in between shows as paid, with the balance left). The email's text is the one
logged when it was queued. The two differ only when the invoice changed in that window
(usually seconds; hours only when the mail server was away), and then the PDF is the newer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from fpdf.errors import FPDFException
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from models.billing import Invoice
from models.clients import Client
from models.emails import EmailMessage
from models.settings import Settings, get_settings
from services.invoice_mail import ATTACHES_PDF
from services.invoice_pdf.document import Company, invoice_pdf
from services.mail.compose import Attachment

log = logging.getLogger(__name__)
NO_ATTACHMENTS: tuple[Attachment, ...] = ()
# What an invoice number may keep in a file name: anything else (a slash, a quote) becomes "-".
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class InvoiceAttachments:
    """The invoice PDFs of one delivery batch (services.mail.delivery._send).

    A notice goes to up to three people and a PDF costs milliseconds to write, so each
    invoice's is made once per batch, from the invoice as it was when the batch got to it.
    The invoices a claimed chunk needs are read in one query with their clients and contacts
    (`load`): read one at a time, each cost three statements (the invoice, its client, the
    client's contacts for the "invoiced to" block), a tenth of the invoice run's worker CPU.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.made: dict[str, tuple[Attachment, ...]] = {}
        # Held here: the session's identity map keeps its objects only while referenced.
        self.invoices: dict[str, Invoice] = {}

    def load(self, messages: Iterable[EmailMessage]) -> None:
        """Read the invoices these messages will attach, in one query, before they are sent."""
        if not get_settings().invoice_pdf:
            return
        wanted = {
            message.invoice_id
            for message in messages
            if _attaches_pdf(message)
            and message.invoice_id not in self.made
            and message.invoice_id not in self.invoices
        }
        if not wanted:
            return
        for invoice in self.session.scalars(
            select(Invoice)
            .where(Invoice.id.in_(sorted(i for i in wanted if i is not None)))
            .options(selectinload(Invoice.client).selectinload(Client.contacts))
        ):
            self.invoices[invoice.id] = invoice

    def for_message(self, message: EmailMessage) -> tuple[Attachment, ...]:
        """The attachments of one message; none for every email that is not an invoice notice.

        Read from the settings here, like the template folder (services.mail.render): they
        are the process's, and every path that delivers (events, the invoice run's batches,
        resends) gets them without passing them down.
        """
        # The hot path: a plain email costs this one lookup. The template first: it is
        # always loaded, while invoice_id, never set on a plain email's row, would be read
        # from the database (a statement per email) on a row merged after its commit.
        if not _attaches_pdf(message):
            return NO_ATTACHMENTS
        settings = get_settings()
        if not settings.invoice_pdf:
            return NO_ATTACHMENTS
        invoice_id = message.invoice_id
        assert invoice_id is not None  # _attaches_pdf
        if invoice_id not in self.made:
            invoice = self.invoices.pop(invoice_id, None) or self.session.get(Invoice, invoice_id)
            self.made[invoice_id] = _invoice_pdf(invoice, message, settings)
        return self.made[invoice_id]


def _attaches_pdf(message: EmailMessage) -> bool:
    return message.template in ATTACHES_PDF and message.invoice_id is not None


def _invoice_pdf(
    invoice: Invoice | None, message: EmailMessage, settings: Settings
) -> tuple[Attachment, ...]:
    if invoice is None:
        # Invoices are never deleted; a row naming a missing one still owes its email.
        log.warning("email %s: invoice %r not found, sent without its PDF", message.id,
                    message.invoice_id)  # fmt: skip
        return NO_ATTACHMENTS
    try:
        data = invoice_pdf(invoice, Company(settings.company_name, settings.company_address))
    except (FPDFException, ValueError, TypeError, LookupError):
        # The email says everything the PDF would: it goes out without it rather than not at
        # all (a content error here would otherwise fail it for good).
        log.warning("email %s: the invoice PDF could not be made, sent without it",
                    message.id, exc_info=True)  # fmt: skip
        return NO_ATTACHMENTS
    return (Attachment(pdf_filename(invoice.number), "application/pdf", data),)


def pdf_filename(number: str) -> str:
    return f"invoice-{_UNSAFE_IN_FILENAME.sub('-', number).strip('-.') or 'unnumbered'}.pdf"
