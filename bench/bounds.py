"""The invoice run's budget per email in parts, and how busy the latency run kept the
machine, for bench/run.py's bounds section: plain arithmetic on a run's results, apart from
run.py so that the tests can check it without importing the benchmark (its stock Celery app
registers a task of its own).
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


def pdf_cost_whole(results: dict[str, Any]) -> list[str]:
    """What the invoice PDF costs an invoice-run email in all: the run with it (the default)
    against the run without it (CLIENTFLOW_INVOICE_PDF=false), in the machine's CPU."""
    with_pdf = results.get("invoice_run", {}).get("cpu_ms_per_item") or {}
    without = results.get("invoice_run_no_pdf", {}).get("cpu_ms_per_item") or {}
    if "machine" not in with_pdf or "machine" not in without:
        return []
    pdf = results["invoice_run"].get("pdf")
    fpdf2 = "" if not pdf else f" ({pdf['cpu_ms_per_email']:.2f} of it fpdf2's, measured apart)"
    moved = " · ".join(
        f"{name} {with_pdf[part]:.2f} → {without[part]:.2f}"
        for part, name in (("worker", "worker"), ("postgres", "PostgreSQL"), ("sink", "sink"))
        if part in with_pdf and part in without
    )
    return [
        f"- the invoice PDF's whole cost: an email of the invoice run took "
        f"{with_pdf['machine']:.2f} ms of the machine's CPU with the PDF (the default) and "
        f"{without['machine']:.2f} without it (CLIENTFLOW_INVOICE_PDF=false): "
        f"{with_pdf['machine'] - without['machine']:.2f} ms per email for reading the invoice "
        f"it shows, making it{fpdf2} and carrying it in base64 ({moved}; CPU ms per email, "
        "with → without)."
    ]


def load_text(load: float) -> str:
    """The latency run's pace, as a fraction of the clients.add rate, in words."""
    return "half" if load == 0.5 else f"{load:g} of"


def latency_load(results: dict[str, Any], cores: int) -> list[str]:
    """How busy the latency run's pace kept the machine: at a fraction of the clients.add
    rate events come in small batches, and each costs more than in the drain's large ones."""
    r = results.get("latency", {})
    split = r.get("cpu_ms_per_item") or {}
    drained = (results.get("clients_add", {}).get("cpu_ms_per_item") or {}).get("machine")
    rate = r.get("achieved_publish_rate_per_s")
    if not {"machine", "worker"} <= split.keys() or not drained or not rate:
        return []
    used = split["machine"]
    publisher = split.get("publisher")
    publishing = (
        ""
        if publisher is None
        else f", and this benchmark publishing it {publisher:.2f} (a publisher that would be "
        "another machine's)"
    )
    return [
        f"- latency: paced at {rate:,.1f} events/s ({load_text(r.get('load', 0.5))} the "
        f"clients.add rate), an event took {used:.2f} ms of the machine's CPU (the worker "
        f"{split['worker']:.2f}{publishing}), against {drained:.2f} in the clients.add drain, "
        f"where batches are large: the pace kept the {cores} cores "
        f"{rate * used / (cores * 1000):.0%} busy."
    ]
