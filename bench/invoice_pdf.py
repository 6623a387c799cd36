"""CPU per invoice PDF, in this process: the core-font path and the embedded-font path.

    .venv/bin/python bench/invoice_pdf.py [--documents 50]

Writes the same one-page invoice (two line items, a client with an address) with
services.invoice_pdf.document.invoice_pdf, once with a name Windows-1252 has ("Zoë Brontë":
the PDF core fonts, nothing embedded) and once with one it lacks ("Łukasz Ωμέγα": DejaVu,
subset and embedded), and prints the CPU milliseconds and the bytes of each. No database: the
invoice and client are unsaved model objects, as the delivery reads them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.billing import Invoice  # noqa: E402
from models.clients import Client  # noqa: E402
from services.invoice_pdf.document import Company, invoice_pdf  # noqa: E402

COMPANY = Company("Bytes & Co Ltd", ("1 Example Street", "Leeds LS1 1AA", "United Kingdom"))


def an_invoice(firstname: str, lastname: str) -> Invoice:
    client = Client(
        id="C1", firstname=firstname, lastname=lastname, email="c1@example.com",
        companyname="", address1="12 St James's Square", address2="", city="London",
        state="", postcode="SW1Y 4JH", country="GB", language=None, billing_contact_id=None,
    )  # fmt: skip
    return Invoice(
        id="I1", number="INV-2026-0001", client=client, date=dt.date(2026, 3, 1),
        due_date=dt.date(2026, 3, 15), status="Unpaid", currency="GBP",
        items=[
            {"description": "Shared Hosting Pro (2026-03-15 - 2026-04-14)", "amount": "1000.00"},
            {"description": "Domain renewal example.com", "amount": "12.99"},
        ],
        subtotal=Decimal("1012.99"), tax=Decimal("202.60"), total=Decimal("1215.59"),
        balance=Decimal("1215.59"),
    )  # fmt: skip


def measure(invoice: Invoice, documents: int) -> tuple[float, int]:
    """CPU milliseconds per PDF, and the PDF's bytes."""
    invoice_pdf(invoice, COMPANY)  # the first one reads the fonts' coverage, once a process
    started = time.process_time()
    for _ in range(documents):
        data = invoice_pdf(invoice, COMPANY)
    return (time.process_time() - started) / documents * 1000, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=50)
    parser.add_argument(
        "--core-fonts-json",
        action="store_true",
        help="only the core-font PDF (the invoice run's kind), as JSON: for bench/run.py, which "
        "runs this in a process of its own (in run.py's, one PDF cost half as much again)",
    )
    args = parser.parse_args()
    if args.core_fonts_json:
        ms, size = measure(an_invoice("Ada", "Client7"), args.documents)
        print(json.dumps({"cpu_ms": round(ms, 3), "bytes": size}))
        return
    print("| client's name | typeface | CPU ms / PDF | bytes |")
    print("|---|---|---|---|")
    for first, last, face in (("Zoë", "Brontë", "core fonts"), ("Łukasz", "Ωμέγα", "DejaVu")):
        ms, size = measure(an_invoice(first, last), args.documents)
        print(f"| {first} {last} | {face} | {ms:.1f} | {size:,} |")


if __name__ == "__main__":
    main()
