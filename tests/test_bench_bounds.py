"""bench/bounds.py: what bounds the invoice run: its budget per email, less the PDF,
PostgreSQL and the sink, against what clientflow's own Python took (pure arithmetic on a
run's results; the benchmark itself runs with make bench)."""

from __future__ import annotations

from typing import Any

from bench.bounds import invoice_run_parts, latency_load, pdf_cost_whole


def results(pdf_ms_each: float, postgres: float, worker: float) -> dict[str, Any]:
    return {
        "smtp": {"cpu_ms_per_message": {"client": 0.25, "sink": 0.17}},
        "invoice_run": {
            "items_done": 1600,
            "cpu_ms_per_item": {"worker": worker, "postgres": postgres, "sink": 0.1},
            # 1,000 PDFs for 1,600 emails
            "pdf": {"made": 1000, "cpu_ms_each": pdf_ms_each,
                    "cpu_ms_per_email": pdf_ms_each * 1000 / 1600},
        },
    }  # fmt: skip


def test_what_is_left_for_clientflow_after_the_pdf_postgresql_and_the_sink() -> None:
    # C at 1,000/s: the target is max(1,500, 1,400) = 1,500 emails/s, so 2 cores leave
    # 1.33 ms per email; the PDF 0.5 + PostgreSQL 0.4 + sink 0.1 leave 0.33.
    (line,) = invoice_run_parts(results(0.8, 0.4, 2.0), cores=2, c=1000.0)
    assert "of the 1.33 ms per email, the PDF takes 0.50" in line
    assert "1,000 PDFs in 1,600 emails" in line
    assert "1.00 together, leaving 0.33 ms" in line
    assert "which took 1.50 (the worker's CPU less the PDF)" in line
    assert "smtplib alone, sending S's message with nothing else to do, took 0.25 ms" in line


def test_parts_over_the_budget_leave_nothing() -> None:
    # C at 1,200/s: 1.4 x C = 1,680 emails/s leaves 1.19 ms; 0.9 + 0.4 + 0.1 = 1.40.
    (line,) = invoice_run_parts(results(1.44, 0.4, 2.0), cores=2, c=1200.0)
    assert "of the 1.19 ms per email" in line
    assert "1.40 together, 0.21 ms over it, leaving nothing" in line


def test_no_line_without_the_pdf_or_postgresql_measured() -> None:
    partial = results(0.8, 0.4, 2.0)
    del partial["invoice_run"]["pdf"]
    assert invoice_run_parts(partial, cores=2, c=1000.0) == []
    assert invoice_run_parts({}, cores=2, c=1000.0) == []


def test_how_busy_the_latency_run_kept_the_machine() -> None:
    # 450 events/s at 3.2 ms of the machine's CPU each: 1.44 s of CPU a second, 72 % of 2 cores.
    latency: dict[str, Any] = {
        "load": 0.5,
        "achieved_publish_rate_per_s": 450.0,
        "cpu_ms_per_item": {"worker": 2.4, "machine": 3.2},
    }
    run = {"clients_add": {"cpu_ms_per_item": {"machine": 1.9}}, "latency": latency}
    (line,) = latency_load(run, cores=2)
    assert "paced at 450.0 events/s (half the clients.add rate)" in line
    assert "3.20 ms of the machine's CPU (the worker 2.40), against 1.90" in line
    assert "kept the 2 cores 72% busy" in line
    latency["load"] = 0.05
    assert "(0.05 of the clients.add rate)" in latency_load(run, cores=2)[0]
    # Where the benchmark's own publishing was measured, it is named beside the worker.
    latency["cpu_ms_per_item"]["publisher"] = 0.45
    assert "(the worker 2.40, and this benchmark publishing it 0.45 (a publisher" in (
        latency_load(run, cores=2)[0]
    )
    # A run without the CPU measured (an older results file) has no line.
    assert latency_load({"latency": {"p50_ms": 20.0}}, cores=2) == []


def test_the_pdfs_whole_cost_is_the_difference_of_the_two_runs() -> None:
    run = results(0.8, 0.4, 2.0)
    run["invoice_run"]["cpu_ms_per_item"]["machine"] = 2.5
    run["invoice_run_no_pdf"] = {
        "cpu_ms_per_item": {"worker": 0.8, "postgres": 0.35, "sink": 0.05, "machine": 1.2}
    }
    (line,) = pdf_cost_whole(run)
    assert "took 2.50 ms of the machine's CPU with the PDF (the default) and 1.20 without" in line
    assert "1.30 ms per email for reading the invoice" in line
    assert "(0.50 of it fpdf2's, measured apart)" in line
    assert "worker 2.00 → 0.80 · PostgreSQL 0.40 → 0.35 · sink 0.10 → 0.05" in line


def test_no_pdf_cost_without_both_runs() -> None:
    run = results(0.8, 0.4, 2.0)
    run["invoice_run"]["cpu_ms_per_item"]["machine"] = 2.5
    assert pdf_cost_whole(run) == []
