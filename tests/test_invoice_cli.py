"""`clientflow invoices run` by hand, and the beat schedule that starts it every day."""

from __future__ import annotations

import subprocess
from pathlib import Path

import payloads
from celery.schedules import crontab
from sqlalchemy import select
from test_cli import run_cli

from models.emails import EmailMessage
from models.engine import make_engine
from models.ops import ScheduledRun
from models.settings import Settings
from services.db import make_session_factory
from services.dispatch import process_event
from workers import migrate
from workers.app import create_app


def test_beat_runs_the_invoice_run_on_the_configured_schedule() -> None:
    default = create_app(Settings()).conf.beat_schedule["invoices-run"]
    custom = create_app(Settings(invoice_run_cron="30 2 * * 1-5")).conf.beat_schedule
    assert default["task"] == "invoices.run"
    assert default["schedule"] == crontab(minute="0", hour="6")
    assert custom["invoices-run"]["schedule"] == crontab(minute="30", hour="2", day_of_week="1-5")


def test_invoices_run_by_hand_shows_progress_and_a_summary(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'cf.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    events = [
        ("clients.add", payloads.client("C1", send_welcome=False)),
        ("services.upsert", payloads.service("S1", next_due_date="2026-03-10")),
        ("invoices.upsert", payloads.invoice("I1", date="2026-02-01", due_date="2026-02-10")),
    ]
    for task, payload in events:
        process_event(
            task, payload, session_factory=sessions, publish=lambda *_: None, company_name="T"
        )

    def invoices_run(day: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(
            tmp_path,
            "invoices",
            "run",
            "--date",
            day,
            check=check,
            database_url=url,
            broker_url=redis_url,
            data_dir=str(tmp_path),
        )

    first = invoices_run("2026-03-01").stdout
    second = invoices_run("2026-03-01").stdout
    bad = invoices_run("tomorrow", check=False)

    assert "unpaid invoices" in first
    assert "Invoice run 1 for 2026-03-01: succeeded" in first
    lines = {
        " ".join(line.split("│")[1].split()): line.split("│")[2].strip()
        for line in first.splitlines()
        if line.count("│") == 3
    }
    assert lines["invoices generated"] == "1"
    # The generated invoice, and I1: first seen 19 days past due, it gets its Invoice Created
    # (the invoice itself) and the four notices whose day has passed are skipped.
    assert lines["notice invoice_created"] == "2"
    assert lines["notice overdue_third"] == "0"
    assert lines["notices skipped (their day passed unrun)"] == "4"
    assert lines["emails queued"] == "2"
    assert lines["chunks"] == "2"  # one per pass, run one after the other by the command
    assert "Invoice run 2 for 2026-03-01: succeeded" in second
    assert bad.returncode == 2
    assert "'tomorrow' is not a date like 2026-01-31" in bad.stderr
    with sessions() as session:
        assert len(session.scalars(select(EmailMessage)).all()) == 2
        runs = session.scalars(select(ScheduledRun).order_by(ScheduledRun.id)).all()
        assert [(r.name, r.status, r.counts["emails"]) for r in runs] == [
            ("invoices.run", "succeeded", 2),
            ("invoices.run", "succeeded", 0),
        ]
    engine.dispose()
