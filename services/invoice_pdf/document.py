"""Writes one invoice as a one-page (or longer) A4 PDF with fpdf2.

It shows what the invoice emails show, from the same values (services.invoice_mail's
invoice_context and invoiced_to): the number and dates, the "invoiced to" block, each line
item, the sub total, tax, total, paid and balance, with amounts and dates written in the
client's language as the email writes them. The labels are English.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from babel import Locale
from babel.dates import format_date
from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from models.billing import Invoice
from services.invoice_mail import invoice_context, invoiced_to
from services.invoice_pdf.fonts import FAMILY, FILES, Style, printable
from services.mail.languages import ENGLISH, locale_for
from services.money import format_money_in

LINE_HEIGHT = 6  # mm, at 10 pt
AMOUNT_WIDTH = 45  # mm: the amount column of the totals
# The line items' description and amount columns: fpdf2 takes them as proportions of the width.
ITEM_COLUMNS = (3, 1)


@dataclass(frozen=True)
class Company:
    """Who the invoice is from: CLIENTFLOW_COMPANY_NAME and CLIENTFLOW_COMPANY_ADDRESS."""

    name: str
    address: tuple[str, ...] = ()


class _Writer:
    """The invoice's values as the PDF writes them: amounts and dates in the client's locale."""

    def __init__(self, currency: str, locale: Locale) -> None:
        self.currency = currency
        self.locale = locale

    def money(self, amount: str) -> str:
        return format_money_in(Decimal(amount), self.currency, self.locale)

    def date(self, iso: str) -> str:
        return format_date(dt.date.fromisoformat(iso), "long", locale=self.locale)


def invoice_pdf(invoice: Invoice, company: Company) -> bytes:
    """The invoice as it is now, as PDF bytes."""
    context = invoice_context(invoice)
    billed_to = invoiced_to(invoice.client)
    writer = _Writer(invoice.currency, locale_for(invoice.client.language) or ENGLISH)

    pdf = FPDF(format="A4")
    pdf.set_title(printable(f"Invoice #{invoice.number}"))
    pdf.set_author(printable(company.name))
    pdf.set_creator("clientflow")
    for style, path in FILES.items():
        pdf.add_font(FAMILY, style, str(path))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()

    _heading(pdf, company, context, writer)
    _invoiced_to(pdf, billed_to)
    _items(pdf, context, writer)
    _totals(pdf, context, writer)
    return bytes(pdf.output())


def _line(pdf: FPDF, text: str, style: Style = "", size: int = 10, align: str = "L") -> None:
    pdf.set_font(FAMILY, style, size)
    # multi_cell: a long company name or address line wraps instead of running off the page.
    pdf.multi_cell(
        0, LINE_HEIGHT, printable(text), align=Align.coerce(align),
        new_x=XPos.LMARGIN, new_y=YPos.NEXT,
    )  # fmt: skip


def _heading(pdf: FPDF, company: Company, context: dict[str, Any], writer: _Writer) -> None:
    _line(pdf, company.name, "B", 16)
    for address_line in company.address:
        _line(pdf, address_line)
    pdf.ln(6)
    _line(pdf, f"Invoice #{context['number']}", "B", 14)
    _line(pdf, f"Invoice date: {writer.date(context['date'])}")
    _line(pdf, f"Due date: {writer.date(context['due_date'])}")
    _line(pdf, f"Status: {context['status']}")
    pdf.ln(4)


def _invoiced_to(pdf: FPDF, billed_to: dict[str, Any]) -> None:
    _line(pdf, "Invoiced to", "B")
    _line(pdf, billed_to["name"])
    if billed_to["companyname"]:
        _line(pdf, billed_to["companyname"])
    for address_line in billed_to["address_lines"]:
        _line(pdf, address_line)
    _line(pdf, billed_to["email"])
    pdf.ln(6)


def _items(pdf: FPDF, context: dict[str, Any], writer: _Writer) -> None:
    pdf.set_font(FAMILY, "", 10)
    # fpdf2's table wraps a long description onto more lines and breaks pages between rows.
    with pdf.table(
        col_widths=ITEM_COLUMNS,
        text_align=(Align.L, Align.R),
        line_height=LINE_HEIGHT,
        first_row_as_headings=True,
    ) as table:
        heading = table.row()
        heading.cell("Description")
        heading.cell("Amount")
        for item in context["items"]:
            row = table.row()
            row.cell(printable(item["description"]))
            row.cell(printable(writer.money(item["amount"])))
    pdf.ln(4)


def _totals(pdf: FPDF, context: dict[str, Any], writer: _Writer) -> None:
    label_width = pdf.epw - AMOUNT_WIDTH
    for label, key in (
        ("Sub Total", "subtotal"),
        ("Tax", "tax"),
        ("Total", "total"),
        ("Paid", "paid"),
        ("Balance due", "balance"),
    ):
        style: Style = "B" if key in ("total", "balance") else ""
        pdf.set_font(FAMILY, style, 10)
        pdf.cell(label_width, LINE_HEIGHT, label, align=Align.R)
        pdf.cell(
            AMOUNT_WIDTH, LINE_HEIGHT, printable(writer.money(context[key])), align=Align.R,
            new_x=XPos.LMARGIN, new_y=YPos.NEXT,
        )  # fmt: skip
