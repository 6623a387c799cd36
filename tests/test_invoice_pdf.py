"""The invoice PDF attached to Invoice Created and the Overdue notices, read back with pypdf
from messages a real SMTP server received."""

from __future__ import annotations

import io
from collections.abc import Iterator
from email.message import EmailMessage as MimeMessage
from typing import Any
from unittest.mock import patch

import payloads
import pytest
from conftest import Apply, Publisher
from fpdf.fonts import CORE_FONTS_CHARWIDTHS
from invoice_helpers import run
from pypdf import PdfReader
from smtp_sink import SmtpSink
from sqlalchemy import event

from models.billing import Invoice
from models.settings import get_settings
from services.db import SessionFactory
from services.invoice_pdf.document import Company, invoice_pdf
from services.invoice_pdf.fonts import CORE, covered, printable
from services.mail.attachments import pdf_filename
from services.mail.delivery import deliver_messages
from services.mail.resend import resend
from services.mail.transports import SmtpTransport

FROM = "Billing <billing@host.example>"
HOSTING = "Hébergement Pro \u2013 Zoë's plan (2026-03-15 - 2026-04-14)"
ITEMS = [
    # An en dash, accents and diaeresis: beyond Latin-1 and fpdf2's core fonts.
    {"description": HOSTING, "amount": "1000.00"},
    {"description": "Domain renewal example.com", "amount": "12.99"},
    {"description": "Support 日本", "amount": "0.00"},
]


@pytest.fixture
def company(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The company's name and postal address as the delivering process reads them."""
    monkeypatch.setenv("CLIENTFLOW_COMPANY_NAME", "Bytes & Co Ltd")
    monkeypatch.setenv(
        "CLIENTFLOW_COMPANY_ADDRESS", "1 Example Street; Leeds LS1 1AA;United Kingdom"
    )
    monkeypatch.delenv("CLIENTFLOW_INVOICE_PDF", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()  # the next test reads the environment as it was


@pytest.fixture
def invoiced(apply: Apply, company: None) -> None:
    """Zoë's invoice I1 (number INV-I1), its items in several scripts, in GBP."""
    apply(
        "clients.add",
        payloads.client("C1", firstname="Zoë", lastname="Brontë", send_welcome=False),
    )
    apply("invoices.upsert", payloads.invoice("I1", items=ITEMS))


def _deliver(publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink) -> None:
    report = deliver_messages(
        publisher.message_ids, session_factory, SmtpTransport(smtp.url), FROM, max_attempts=3
    )
    assert report.failed == []
    assert report.retry == []
    publisher.sent.clear()


def _received(smtp: SmtpSink, count: int) -> dict[str, MimeMessage]:
    """The messages received since the last call, by template."""
    messages = [r.message for r in smtp.wait_for(count)]
    smtp.clear()
    return {str(m["X-Clientflow-Template"]): m for m in messages}


def _pdfs(message: MimeMessage) -> list[tuple[str | None, bytes]]:
    """(file name, bytes) of each application/pdf attachment."""
    found = []
    for part in message.iter_attachments():
        if part.get_content_type() == "application/pdf":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found.append((part.get_filename(), payload))
    return found


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_invoice_created_carries_the_invoice_as_a_pdf(
    invoiced: None, publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink
) -> None:
    run(session_factory, publisher, "2026-03-01")
    _deliver(publisher, session_factory, smtp)

    message = _received(smtp, 1)["invoice_created"]
    assert message.get_content_type() == "multipart/mixed"
    body, attachment = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in body.iter_parts()] == ["text/plain", "text/html"]
    assert attachment.get_content_disposition() == "attachment"
    [(filename, pdf)] = _pdfs(message)
    assert filename == "invoice-INV-I1.pdf"
    assert pdf.startswith(b"%PDF-")

    text = _text(pdf)
    for expected in (
        "INV-I1",
        HOSTING,
        "Domain renewal example.com",
        # A character the vendored fonts cannot draw is replaced, not dropped with the line.
        "Support ??",
        "£1,000.00",
        "£12.99",
        "£0.00",
        "Sub Total £1,012.99",
        "Tax £202.60",
        "Total £1,215.59",
        "Balance due £1,215.59",
        # Invoiced to: the client, as the email says.
        "Zoë Brontë",
        "12 St James's Square",
        "c1@example.com",
        # From: the company.
        "Bytes & Co Ltd",
        "1 Example Street",
        "Leeds LS1 1AA",
        "March 15, 2026",
    ):
        assert expected in text, (expected, text)


def test_the_overdue_notices_carry_it_the_reminder_and_confirmation_do_not(
    invoiced: None,
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    attached: dict[str, list[str | None]] = {}
    # Each run sends the one notice due that day (overdue days 1, 7, 14 after 15 March).
    for day in ("2026-03-01", "2026-03-08", "2026-03-16", "2026-03-22", "2026-03-29"):
        run(session_factory, publisher, day)
        _deliver(publisher, session_factory, smtp)
        for template, message in _received(smtp, 1).items():
            attached[template] = [name for name, _ in _pdfs(message)]
    apply("invoices.record_payment", payloads.payment("I1", "1215.59"))
    _deliver(publisher, session_factory, smtp)
    for template, message in _received(smtp, 1).items():
        attached[template] = [name for name, _ in _pdfs(message)]

    assert attached == {
        "invoice_created": ["invoice-INV-I1.pdf"],
        "invoice_payment_reminder": [],
        "invoice_overdue_first": ["invoice-INV-I1.pdf"],
        "invoice_overdue_second": ["invoice-INV-I1.pdf"],
        "invoice_overdue_third": ["invoice-INV-I1.pdf"],
        "invoice_payment_confirmation": [],
    }


def test_setting_it_off_sends_the_invoice_emails_without_it(
    invoiced: None,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIENTFLOW_INVOICE_PDF", "false")
    get_settings.cache_clear()
    run(session_factory, publisher, "2026-03-01")
    _deliver(publisher, session_factory, smtp)

    message = _received(smtp, 1)["invoice_created"]
    assert message.get_content_type() == "multipart/alternative"
    assert _pdfs(message) == []


def test_other_emails_carry_no_attachment(
    apply: Apply,
    company: None,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=True))
    apply("notifications.send", payloads.notification("C1", "general"))
    _deliver(publisher, session_factory, smtp)

    received = _received(smtp, 2)
    assert sorted(received) == ["client_signup", "general_announcement"]
    for message in received.values():
        assert message.get_content_type() == "multipart/alternative"
        assert list(message.iter_attachments()) == []


def test_the_pdf_is_the_invoice_as_it_is_when_delivered(
    invoiced: None,
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    """Paid in part between queueing and delivery: the email's text is the one logged with
    the balance it had; the PDF is the invoice document as it now stands."""
    run(session_factory, publisher, "2026-03-01")
    queued = list(publisher.message_ids)
    apply("invoices.record_payment", payloads.payment("I1", "215.59"))
    publisher.sent.clear()
    deliver_messages(queued, session_factory, SmtpTransport(smtp.url), FROM, max_attempts=3)

    message = _received(smtp, 1)["invoice_created"]
    body = message.get_body(("plain",))
    assert body is not None
    assert "Balance due: £1,215.59" in body.get_content()
    [(_, pdf)] = _pdfs(message)
    text = _text(pdf)
    assert "Paid £215.59" in text
    assert "Balance due £1,000.00" in text


def test_a_resend_carries_the_pdf_too(
    invoiced: None, publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink
) -> None:
    run(session_factory, publisher, "2026-03-01")
    [original_id] = publisher.message_ids
    _deliver(publisher, session_factory, smtp)
    _received(smtp, 1)

    resent = resend(session_factory, publisher, original_id)
    assert resent.copy.invoice_id == "I1"
    _deliver(publisher, session_factory, smtp)

    [(filename, pdf)] = _pdfs(_received(smtp, 1)["invoice_created"])
    assert filename == "invoice-INV-I1.pdf"
    assert "Total £1,215.59" in _text(pdf)


def test_each_invoice_pdf_is_written_once_per_delivery_batch(
    invoiced: None,
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    apply("contacts.add", payloads.contact("K1", "C1", "invoice"))
    apply("contacts.add", payloads.contact("K2", "C1", "invoice"))
    run(session_factory, publisher, "2026-03-01")
    with patch("services.mail.attachments.invoice_pdf", wraps=invoice_pdf) as writes:
        _deliver(publisher, session_factory, smtp)

    received = [r.message for r in smtp.wait_for(3)]
    assert writes.call_count == 1
    pdfs = {pdf for message in received for _, pdf in _pdfs(message)}
    assert len(pdfs) == 1  # the same file for the holder and both contacts


def test_the_invoices_a_batch_attaches_are_read_in_one_query(
    invoiced: None,
    apply: Apply,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    for invoice_id in ("I2", "I3", "I4"):
        apply("invoices.upsert", payloads.invoice(invoice_id))
    run(session_factory, publisher, "2026-03-01")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    bind = session_factory.kw["bind"]
    event.listen(bind, "before_cursor_execute", seen)
    try:
        _deliver(publisher, session_factory, smtp)
    finally:
        event.remove(bind, "before_cursor_execute", seen)

    received = _received(smtp, 4)
    assert len(received) == 1  # four Invoice Created emails, one template
    invoices_read = [s for s in statements if s.startswith("SELECT") and "FROM invoices" in s]
    clients_read = [s for s in statements if s.startswith("SELECT") and "FROM clients" in s]
    assert len(invoices_read) == 1, invoices_read
    assert len(clients_read) == 1, clients_read


def test_file_names_keep_only_safe_characters() -> None:
    assert pdf_filename("INV-2026-001") == "invoice-INV-2026-001.pdf"
    assert pdf_filename('2026/03 "7"') == "invoice-2026-03-7.pdf"
    assert pdf_filename("///") == "invoice-unnumbered.pdf"


def test_printable_keeps_what_the_fonts_draw_and_replaces_the_rest() -> None:
    ascii_printable = "".join(chr(code) for code in range(0x20, 0x7F))
    assert all(ord(char) in covered() for char in ascii_printable)  # printable's fast path
    assert printable(ascii_printable) == ascii_printable
    assert printable("a\tb\r\nc") == "a b  c"
    assert printable("Zoë £ € Łukasz Ωμέγα Жук") == "Zoë £ € Łukasz Ωμέγα Жук"
    assert printable("日本\n🙂") == "?? ?"


def _fonts(pdf: bytes) -> set[str]:
    """The base fonts the first page is set in: a core font's name ("/Helvetica") is the
    reader's own font; an embedded one carries a subset prefix ("/MPDFAA+DejaVuSans")."""
    resources: Any = PdfReader(io.BytesIO(pdf)).pages[0]["/Resources"]
    return {str(font.get_object()["/BaseFont"]) for font in resources["/Font"].values()}


def _stored_invoice_pdf(session_factory: SessionFactory) -> bytes:
    with session_factory() as session:
        invoice = session.get(Invoice, "I1")
        assert invoice is not None
        return invoice_pdf(invoice, Company("Bytes & Co Ltd", ("1 Example Street",)))


def test_western_european_text_is_set_in_the_core_fonts_and_embeds_none(
    apply: Apply, session_factory: SessionFactory
) -> None:
    # French amounts carry Babel's narrow no-break space, which Windows-1252 lacks: written as
    # a no-break space, the invoice stays on the core fonts.
    apply("clients.add", payloads.client(
        "C1", firstname="Zoë", lastname="Brontë", language="french", send_welcome=False
    ))  # fmt: skip
    invoiced = apply("invoices.upsert", payloads.invoice("I1", currency="EUR", items=[
        {"description": "Hébergement \u2013 cœur d\u2019été", "amount": "1000.00"},
    ], subtotal="1000.00", tax="200.00", total="1200.00", balance="1200.00"))  # fmt: skip
    assert invoiced.reason is None, invoiced.reason

    pdf = _stored_invoice_pdf(session_factory)

    assert _fonts(pdf) == {"/Helvetica", "/Helvetica-Bold"}
    text = _text(pdf)
    for expected in ("Zoë Brontë", "Hébergement \u2013 cœur d\u2019été", "1\u00a0000,00\u00a0€"):
        assert expected in text, (expected, text)


def test_text_beyond_windows_1252_is_set_in_the_embedded_font(
    apply: Apply, session_factory: SessionFactory
) -> None:
    apply("clients.add", payloads.client(
        "C1", firstname="Łukasz", lastname="Ωμέγα", send_welcome=False
    ))  # fmt: skip
    apply("invoices.upsert", payloads.invoice("I1", items=ITEMS))

    pdf = _stored_invoice_pdf(session_factory)

    assert {name.split("+")[-1] for name in _fonts(pdf)} == {"DejaVuSansBook", "DejaVuSansBold"}
    text = _text(pdf)
    for expected in ("Łukasz Ωμέγα", HOSTING, "Support ??", "Total £1,215.59"):
        assert expected in text, (expected, text)


def _pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def test_a_long_description_wraps_in_its_column_and_keeps_its_amount(
    apply: Apply, session_factory: SessionFactory
) -> None:
    long = "Dedicated server " + " ".join(f"option-{n}" for n in range(18))  # ~190 characters
    apply("clients.add", payloads.client("C1", send_welcome=False))
    applied = apply("invoices.upsert", payloads.invoice("I1", items=[
        {"description": long, "amount": "1000.00"},
        {"description": "Domain renewal example.com", "amount": "12.99"},
    ]))  # fmt: skip
    assert applied.reason is None, applied.reason

    [text] = _pages(_stored_invoice_pdf(session_factory))

    # Every word is there, over more than one line (extract_text breaks lines with "\n").
    flowing = " ".join(text.split())
    assert long in flowing
    assert long not in text.splitlines()
    assert "£1,000.00" in text
    assert "Domain renewal example.com £12.99" in text


def test_many_items_run_onto_more_pages_with_the_heading_on_each(
    apply: Apply, session_factory: SessionFactory
) -> None:
    items = [{"description": f"Addon number {n:03}", "amount": "1.00"} for n in range(90)]
    apply("clients.add", payloads.client("C1", send_welcome=False))
    applied = apply("invoices.upsert", payloads.invoice(
        "I1", items=items, subtotal="90.00", tax="0.00", total="90.00", balance="90.00"
    ))  # fmt: skip
    assert applied.reason is None, applied.reason

    pages = _pages(_stored_invoice_pdf(session_factory))

    assert len(pages) >= 2
    on_page = [[n for n in range(90) if f"Addon number {n:03} £1.00" in page] for page in pages]
    # Each row whole on one page (its description beside its amount), every one once, in order.
    assert [n for page in on_page for n in page] == list(range(90))
    for page, rows in zip(pages, on_page, strict=True):
        if rows:
            assert "Description Amount" in page
    assert "Total £90.00" in pages[-1]


def _page_with_company_address(
    apply: Apply, session_factory: SessionFactory, address_line: str
) -> str:
    """The text of an invoice's one page whose company address is `address_line`."""
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("invoices.upsert", payloads.invoice("I1"))
    with session_factory() as session:
        invoice = session.get(Invoice, "I1")
        assert invoice is not None
        pdf = invoice_pdf(invoice, Company("Bytes & Co Ltd", (address_line,)))
    [text] = _pages(pdf)
    return text


def test_a_company_address_line_too_long_for_the_page_wraps(
    apply: Apply, session_factory: SessionFactory
) -> None:
    street = "Unit " + " ".join(f"{n}B" for n in range(45)) + " Industrial Estate Road"
    text = _page_with_company_address(apply, session_factory, street)
    assert street in " ".join(text.split())
    assert street not in text.splitlines()  # on more than one line, not cut at the margin


def test_no_core_font_glyph_is_wider_than_the_typeface_says() -> None:
    """A line is taken to fit unmeasured when even this many of the widest glyph would: a
    wider glyph in a later fpdf2 would let a line run off the page."""
    widest = max(max(CORE_FONTS_CHARWIDTHS[CORE.family + style].values()) for style in ("", "B"))
    assert CORE.widest_glyph is not None
    assert widest / 1000 <= CORE.widest_glyph


def test_a_line_of_the_widest_glyph_just_over_the_page_is_measured_and_wraps(
    apply: Apply, session_factory: SessionFactory
) -> None:
    # 54 "@" (Helvetica's widest, 1.015 em) at 10 pt: 193 mm against the 188 a line has.
    line = "@" * 54
    text = _page_with_company_address(apply, session_factory, line)
    assert line in "".join(text.split())
    assert line not in text.splitlines()  # wrapped, not run off the page
