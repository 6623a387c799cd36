"""The invoice run's budget per email in parts, for bench/run.py's bounds section: plain
arithmetic on a run's results, apart from run.py so that the tests can check it without
importing the benchmark (its stock Celery app registers a task of its own).
"""

from __future__ import annotations

from typing import Any


def invoice_run_target(c: float) -> float:
    """Issue 10's invoice-run target in emails/s, from C's rate: 1,500/s and 1.4 x C."""
    return max(1500.0, 1.4 * c)


def invoice_run_parts(results: dict[str, Any], cores: int, c: float) -> list[str]:
    """The invoice run's budget per email less what is not clientflow's Python: the PDF
    (fpdf2), PostgreSQL and the sink; and what is left against what that Python took."""
    r = results.get("invoice_run", {})
    pdf = r.get("pdf")
    split = r.get("cpu_ms_per_item") or {}
    if not pdf or not {"postgres", "sink", "worker"} <= split.keys():
        return []
    budget = cores * 1000 / invoice_run_target(c)
    pdf_ms = pdf["cpu_ms_per_email"]
    others = pdf_ms + split["postgres"] + split["sink"]
    left = (
        f"leaving {budget - others:.2f} ms"
        if others < budget
        else f"{others - budget:.2f} ms over it, leaving nothing"
    )
    line = (
        f"- invoice run, the budget's parts: of the {budget:.2f} ms per email, the PDF takes "
        f"{pdf_ms:.2f} (fpdf2: {pdf['cpu_ms_each']:.2f} ms each, measured apart, for "
        f"{pdf['made']:,} PDFs in {r.get('items_done', 0):,} emails), PostgreSQL "
        f"{split['postgres']:.2f} and the sink {split['sink']:.2f}: {others:.2f} together, "
        f"{left} for all of clientflow's own Python (reading the invoices, rendering, "
        f"composing, the SMTP client, the sent records, Celery), which took "
        f"{split['worker'] - pdf_ms:.2f} (the worker's CPU less the PDF)"
    )
    send = results.get("smtp", {}).get("cpu_ms_per_message")
    if send:
        line += (
            f"; smtplib alone, sending S's message with nothing else to do, took "
            f"{send['client']:.2f} ms of it"
        )
    return [line + "."]
