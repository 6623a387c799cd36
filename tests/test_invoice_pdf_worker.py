"""The invoice PDF through a real worker: the invoice run, Redis, PostgreSQL, the SMTP sink."""

from __future__ import annotations

import io

import payloads
import pytest
from pypdf import PdfReader
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_invoice_worker import load
from worker_process import WorkerProcess, worker_fixture

from models.emails import EmailMessage, EmailStatus

pytestmark = pytest.mark.worker

pdf_worker = worker_fixture(
    name="pdf_worker",
    extra_settings={
        "company_name": "Bytes & Co Ltd",
        "company_address": "1 Example Street;Leeds LS1 1AA",
        "invoice_pdf": "true",
    },
)


def test_the_invoice_run_sends_invoice_created_with_its_pdf(
    pdf_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    load(pdf_worker, "clients.add", payloads.client("C1", firstname="Zoë", send_welcome=False))
    load(pdf_worker, "invoices.upsert", payloads.invoice("I1"))

    pdf_worker.publish("invoices.run", {"run_date": "2026-03-01"})

    def invoice_created_sent(session: Session) -> bool:
        return session.scalar(
            select(EmailMessage.id).where(
                EmailMessage.template == "invoice_created", EmailMessage.status == EmailStatus.SENT
            )
        ) is not None

    pdf_worker.wait_for_db(invoice_created_sent, "Invoice Created sent", timeout=120)
    # Picked by template: only the invoice run's email is asserted on.
    [message] = [
        r.message for r in smtp.messages if r.message["X-Clientflow-Template"] == "invoice_created"
    ]
    assert message["To"] == "Zoë Lovelace <c1@example.com>"
    assert message.get_content_type() == "multipart/mixed"
    [attachment] = message.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "invoice-INV-I1.pdf"
    pdf = attachment.get_payload(decode=True)
    assert isinstance(pdf, bytes)
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    for expected in (
        "Invoice #INV-I1",
        "Shared Hosting Pro (2026-03-15 - 2026-04-14)",
        "Domain renewal example.com",
        "Total £1,215.59",
        "Balance due £1,215.59",
        "Zoë Lovelace",
        "Bytes & Co Ltd",
        "Leeds LS1 1AA",
    ):
        assert expected in text, (expected, text)
