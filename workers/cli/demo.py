"""`clientflow demo`: the story through a real worker on the embedded default, no servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from models.emails import EmailMessage, EmailStatus
from models.engine import make_engine
from models.records import ProcessedEvent, RejectedEvent
from models.settings import Settings
from services.db import SessionFactory, make_session_factory
from workers import migrate
from workers.app import create_app
from workers.cli.demo_story import Event, story
from workers.signals import prepare_embedded_broker

TIMEOUT_SECONDS = 120


def embedded_environment(folder: Path) -> dict[str, str]:
    """The worker's environment: every CLIENTFLOW_* setting dropped except the data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIENTFLOW_")}
    env["CLIENTFLOW_DATA_DIR"] = str(folder)
    return env


def run_demo(folder: Path, console: Console) -> int:
    started = time.monotonic()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    settings = Settings(data_dir=folder, broker_url="filesystem://", database_url="", smtp_url="")
    url = settings.effective_database_url
    migrate.upgrade(url)
    prepare_embedded_broker(settings)
    console.print(f"[bold]database[/bold] {url} migrated")

    log_path = folder / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            env=embedded_environment(folder),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    console.print(f"[bold]worker[/bold] started (pid {worker.pid}), log in {log_path}")
    events = story()
    publisher = create_app(settings)
    sessions = make_session_factory(make_engine(url))
    try:
        done = _publish_in_order(publisher, sessions, events) and _wait_until_settled(
            sessions, settings.broker_folder / "queue"
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    console.print(f"[bold]published[/bold] {len(events)} events to {settings.broker_url}")
    elapsed = time.monotonic() - started
    _print_summary(console, sessions, events, settings.effective_mail_dir, elapsed)
    if not done:
        console.print(f"[red]the worker did not settle within {TIMEOUT_SECONDS} s[/red]")
        return 1
    return 0


def _publish_in_order(publisher: Celery, sessions: SessionFactory, events: list[Event]) -> bool:
    """The story depends on order, which no broker keeps across publishes in the same
    millisecond (kombu's filesystem transport names files by milliseconds): publish each
    event once the one before it is applied or refused.
    """
    deadline = time.monotonic() + TIMEOUT_SECONDS
    seen: set[str] = set()
    for name, kwargs in events:
        publisher.send_task(name, kwargs=kwargs)
        event_id = kwargs["event_id"]
        if event_id in seen:
            continue  # a redelivery leaves no row to wait for
        seen.add(event_id)
        while not _settled_event(sessions, event_id):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    return True


def _settled_event(sessions: SessionFactory, event_id: str) -> bool:
    with sessions() as session:
        return (
            session.get(ProcessedEvent, event_id) is not None
            or session.scalar(select(RejectedEvent.id).where(RejectedEvent.event_id == event_id))
            is not None
        )


def _wait_until_settled(sessions: SessionFactory, queue_folder: Path) -> bool:
    """Settled: no email owed and no message waiting in the broker."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with sessions() as session:
            owed = session.scalar(
                select(func.count()).where(EmailMessage.status == EmailStatus.QUEUED)
            )
        if not owed and not any(queue_folder.iterdir()):
            return True
        time.sleep(0.1)
    return False


def _print_summary(
    console: Console,
    sessions: SessionFactory,
    events: list[Event],
    mail_dir: Path,
    elapsed: float,
) -> None:
    with sessions() as session:
        applied = set(session.scalars(select(ProcessedEvent.event_id)))
        refused = {r.event_id: r.reason for r in session.scalars(select(RejectedEvent))}
        emails = list(session.scalars(select(EmailMessage).order_by(EmailMessage.created_at)))

    table = Table(title="Events published")
    for column in ("#", "task", "event id", "outcome"):
        table.add_column(column, overflow="fold")
    seen: set[str] = set()
    for number, (name, kwargs) in enumerate(events, start=1):
        event_id = kwargs["event_id"]
        if event_id in seen:
            outcome = "[yellow]duplicate: ignored, nothing sent[/yellow]"
        elif event_id in refused:
            outcome = f"[red]rejected:[/red] {refused[event_id]}"
        elif event_id in applied:
            outcome = "[green]applied[/green]"
        else:
            outcome = "[red]not processed[/red]"
        seen.add(event_id)
        table.add_row(str(number), name, event_id, outcome)
    console.print(table)

    mail = Table(title=f"Emails ({mail_dir})")
    for column in ("event id", "to", "template", "subject", "status"):
        mail.add_column(column, overflow="fold")
    for m in emails:
        mail.add_row(m.event_id, m.to_address, m.template, m.subject, m.status)
    console.print(mail)

    files = sorted(mail_dir.glob("*.eml")) if mail_dir.exists() else []
    sent = sum(1 for m in emails if m.status == EmailStatus.SENT)
    console.print(
        f"[bold]{len(applied)} events applied, {len(refused)} rejected, "
        f"{len(events) - len(seen)} duplicate ignored; {sent} emails sent, "
        f"{len(files)} .eml files in {mail_dir}; wall time {elapsed:.1f} s[/bold]"
    )
