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

from fpdf.errors import FPDFException
from sqlalchemy.orm import Session

from models.billing import Invoice
from models.emails import EmailMessage
from models.settings import Settings, get_settings
from services.invoice_mail import ATTACHES_PDF
from services.invoice_pdf.document import Company, invoice_pdf
from services.mail.compose import Attachment

log = logging.getLogger(__name__)
NO_ATTACHMENTS: tuple[Attachment, ...] = ()
# What an invoice number may keep in a file name: anything else (a slash, a quote) becomes "-".
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


# Invoice id -> its attachments, for one delivery batch (services.mail.delivery._send): a
# notice goes to up to three people, and a PDF costs tens of milliseconds to write, so each
# invoice's is made once per batch, from the invoice as it was when the batch got to it.
MadeThisBatch = dict[str, tuple[Attachment, ...]]


def attachments_for(
    session: Session, message: EmailMessage, made: MadeThisBatch
) -> tuple[Attachment, ...]:
    """The attachments of one message; none for every email that is not an invoice notice.

    Read from the settings here, like the template folder (services.mail.render): they are
    the process's, and every path that delivers (events, the invoice run's batches, resends)
    gets them without passing them down.
    """
    # The hot path: a plain email costs this one lookup. The template first: it is always
    # loaded, while invoice_id, never set on a plain email's row, would be read from the
    # database (a statement per email) on a row merged after its commit.
    if message.template not in ATTACHES_PDF or message.invoice_id is None:
        return NO_ATTACHMENTS
    settings = get_settings()
    if not settings.invoice_pdf:
        return NO_ATTACHMENTS
    if message.invoice_id not in made:
        made[message.invoice_id] = _invoice_pdf(session, message, settings)
    return made[message.invoice_id]


def _invoice_pdf(
    session: Session, message: EmailMessage, settings: Settings
) -> tuple[Attachment, ...]:
    invoice = session.get(Invoice, message.invoice_id)
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
