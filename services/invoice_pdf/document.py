"""Writes one invoice as a one-page (or longer) A4 PDF with fpdf2.

It shows what the invoice emails show, from the same values (services.invoice_mail's
invoice_context and invoiced_to): the number and dates, the "invoiced to" block, each line
item, the sub total, tax, total, paid and balance, with amounts and dates written in the
client's language as the email writes them. The labels are English. Set in the PDF core
fonts where the invoice's text allows, else in the embedded DejaVu (services.invoice_pdf.fonts).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from babel import Locale
from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos
from fpdf.errors import FPDFUnicodeEncodingException

from models.billing import Invoice
from services.invoice_mail import invoice_context, invoiced_to
from services.invoice_pdf.fonts import CORE, EMBEDDED, Style, Typeface, printable
from services.mail.filters import date_in
from services.mail.languages import ENGLISH, locale_for
from services.money import format_money_in

LINE_HEIGHT = 6  # mm, at 10 pt
AMOUNT_WIDTH = 45  # mm: the amount column of the totals
# The line items' description and amount columns, as shares of the page's width.
ITEM_COLUMNS = (3, 1)
HEADING = ("Description", "Amount")  # one line in its columns


@dataclass(frozen=True)
class Company:
    """Who the invoice is from: CLIENTFLOW_COMPANY_NAME and CLIENTFLOW_COMPANY_ADDRESS."""

    name: str
    address: tuple[str, ...] = ()


class _Writer:
    """The invoice's values as the PDF writes them: amounts and dates in the client's locale,
    in one typeface."""

    def __init__(self, currency: str, locale: Locale, face: Typeface) -> None:
        self.currency = currency
        self.locale = locale
        self.face = face

    def money(self, amount: str) -> str:
        return format_money_in(Decimal(amount), self.currency, self.locale)

    def date(self, iso: str) -> str:
        return date_in(dt.date.fromisoformat(iso), "long", self.locale)


def invoice_pdf(invoice: Invoice, company: Company) -> bytes:
    """The invoice as it is now, as PDF bytes."""
    context = invoice_context(invoice)
    billed_to = invoiced_to(invoice.client)
    locale = locale_for(invoice.client.language) or ENGLISH
    try:
        return _document(company, context, billed_to, _Writer(invoice.currency, locale, CORE))
    except FPDFUnicodeEncodingException:
        # A character outside Windows-1252 (fpdf2 finds it as it writes the text): the same
        # document again, in the font that has it.
        return _document(company, context, billed_to, _Writer(invoice.currency, locale, EMBEDDED))


def _document(
    company: Company, context: dict[str, Any], billed_to: dict[str, Any], writer: _Writer
) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(printable(f"Invoice #{context['number']}"))
    pdf.set_author(printable(company.name))
    pdf.set_creator("clientflow")
    writer.face.install(pdf)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()

    _heading(pdf, company, context, writer)
    _invoiced_to(pdf, billed_to, writer)
    _items(pdf, context, writer)
    _totals(pdf, context, writer)
    return bytes(pdf.output())


def _line(
    pdf: FPDF, writer: _Writer, text: str, style: Style = "", size: int = 10, align: str = "L"
) -> None:
    pdf.set_font(writer.face.family, style, size)
    text = printable(text)
    if _fits(pdf, writer.face, text, pdf.epw):
        # Fits on one line, as nearly every line does. multi_cell would find that out by
        # measuring the text again at every character (fpdf2's line breaking).
        _room(pdf, LINE_HEIGHT)
        _one_line(pdf, pdf.epw, LINE_HEIGHT, text, align)
        _next_line(pdf, LINE_HEIGHT)
        return
    # A long company name or address line wraps instead of running off the page.
    pdf.multi_cell(
        0, LINE_HEIGHT, text, align=Align.coerce(align), new_x=XPos.LMARGIN, new_y=YPos.NEXT,
    )  # fmt: skip


def _one_line(
    pdf: FPDF, width: float, height: float, text: str, align: str = "L", border: bool = False
) -> None:
    """What pdf.cell draws for text that fits on one line, with pdf.text: the text inside
    the cell's padding on the left or the right, on the baseline fpdf2 gives a cell (half
    the height down, plus 0.3 of the font size), and the cell's border; then the position
    moves to the cell's right edge, as cell's default does. A quarter of cell's CPU: cell
    lays out styled fragments, links and alignment for every line, and a document has
    thirty of them (bench/invoice_pdf.py).
    """
    x, y = pdf.get_x(), pdf.get_y()
    if border:
        pdf.rect(x, y, width, height)
    if align == "R":
        left = x + width - pdf.c_margin - pdf.get_string_width(text)
    else:
        left = x + pdf.c_margin
    pdf.text(left, y + 0.5 * height + 0.3 * pdf.font_size, text)
    pdf.set_xy(x + width, y)


def _room(pdf: FPDF, height: float) -> None:
    """A new page when `height` more would run into the bottom margin (cell's own rule)."""
    if pdf.will_page_break(height):
        pdf.add_page()


def _next_line(pdf: FPDF, height: float) -> None:
    pdf.set_xy(pdf.l_margin, pdf.get_y() + height)


def _heading(pdf: FPDF, company: Company, context: dict[str, Any], writer: _Writer) -> None:
    _line(pdf, writer, company.name, "B", 16)
    for address_line in company.address:
        _line(pdf, writer, address_line)
    pdf.ln(6)
    _line(pdf, writer, f"Invoice #{context['number']}", "B", 14)
    _line(pdf, writer, f"Invoice date: {writer.date(context['date'])}")
    _line(pdf, writer, f"Due date: {writer.date(context['due_date'])}")
    _line(pdf, writer, f"Status: {context['status']}")
    pdf.ln(4)


def _invoiced_to(pdf: FPDF, billed_to: dict[str, Any], writer: _Writer) -> None:
    _line(pdf, writer, "Invoiced to", "B")
    _line(pdf, writer, billed_to["name"])
    if billed_to["companyname"]:
        _line(pdf, writer, billed_to["companyname"])
    for address_line in billed_to["address_lines"]:
        _line(pdf, writer, address_line)
    _line(pdf, writer, billed_to["email"])
    pdf.ln(6)


def _items(pdf: FPDF, context: dict[str, Any], writer: _Writer) -> None:
    # The line items as a two-column ruled table, drawn with cells rather than fpdf2's
    # table(): that lays every cell out with multi_cell twice (to size the row, then to draw
    # it), measuring its text again at each character, which was 40 % of a PDF's CPU. A
    # description too long for its column still wraps, a row never splits across pages, and
    # the heading is repeated on a new page, as the table did.
    widths = (
        pdf.epw * ITEM_COLUMNS[0] / sum(ITEM_COLUMNS),
        pdf.epw * ITEM_COLUMNS[1] / sum(ITEM_COLUMNS),
    )
    _item_row(pdf, writer, HEADING, widths, 1, "B")
    for item in context["items"]:
        row = (printable(item["description"]), printable(writer.money(item["amount"])))
        pdf.set_font(writer.face.family, "", 10)
        lines = _lines(pdf, writer.face, row[0], widths[0])
        if pdf.will_page_break(lines * LINE_HEIGHT):
            pdf.add_page()
            _item_row(pdf, writer, HEADING, widths, 1, "B")
        _item_row(pdf, writer, row, widths, lines)
    pdf.ln(4)


def _fits(pdf: FPDF, face: Typeface, text: str, width: float) -> bool:
    """Whether `text` fits on one line of a cell `width` wide, in the current font: one
    measurement, where multi_cell would measure it again at every character, and none for
    text too short to be wider than the room even in the typeface's widest glyph (nearly
    every line: measuring was a quarter of a core-font PDF's CPU)."""
    room = width - 2 * pdf.c_margin
    if face.widest_glyph is not None and len(text) * face.widest_glyph * pdf.font_size <= room:
        return True
    return bool(pdf.get_string_width(text) <= room)


def _lines(pdf: FPDF, face: Typeface, text: str, width: float) -> int:
    """The lines `text` takes in a column `width` wide, in the current font."""
    if _fits(pdf, face, text, width):
        return 1  # the common case
    return len(pdf.multi_cell(width, LINE_HEIGHT, text, dry_run=True, output="LINES"))


def _item_row(
    pdf: FPDF,
    writer: _Writer,
    texts: tuple[str, str],
    widths: tuple[float, float],
    lines: int,
    style: Style = "",
) -> None:
    """One row of `lines` lines: the description on the left (wrapped when long), the
    amount on the right, as tall as the description."""
    description, amount = texts
    pdf.set_font(writer.face.family, style, 10)
    if lines == 1:
        _one_line(pdf, widths[0], LINE_HEIGHT, description, "L", border=True)
    else:
        pdf.multi_cell(
            widths[0], LINE_HEIGHT, description, border=1, align=Align.L,
            new_x=XPos.RIGHT, new_y=YPos.TOP,
        )  # fmt: skip
    _one_line(pdf, widths[1], lines * LINE_HEIGHT, amount, "R", border=True)
    _next_line(pdf, lines * LINE_HEIGHT)


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
        pdf.set_font(writer.face.family, style, 10)
        _room(pdf, LINE_HEIGHT)
        _one_line(pdf, label_width, LINE_HEIGHT, label, "R")
        _one_line(pdf, AMOUNT_WIDTH, LINE_HEIGHT, printable(writer.money(context[key])), "R")
        _next_line(pdf, LINE_HEIGHT)
