"""The embedded filesystem broker: whole messages only, and unreadable files never stop a worker.

CI once saw the demo's worker die on an empty message file: kombu's own transport writes a
message into its final name, and the worker had moved the file away before it was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import payloads
import pytest
from celery import Celery
from servers import environ_without_settings
from sqlalchemy import func, select
from worker_process import wait_for_db

from models.engine import make_engine
from models.records import ProcessedEvent, RejectedEvent
from models.settings import Settings
from services.db import SessionFactory, make_session_factory
from tasks import runtime
from workers import migrate
from workers.app import create_app
from workers.signals import prepare_embedded_broker


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Settings, Celery, SessionFactory]]:
    settings = Settings(data_dir=tmp_path, broker_url="filesystem://", database_url="", smtp_url="")
    migrate.upgrade(settings.effective_database_url)
    prepare_embedded_broker(settings)
    engine = make_engine(settings.effective_database_url)
    yield settings, create_app(settings), make_session_factory(engine)
    engine.dispose()


def queue_folder(settings: Settings) -> Path:
    return settings.broker_folder / "queue"


def message_files(settings: Settings) -> list[str]:
    return sorted(p.name for p in queue_folder(settings).glob("*.msg"))


def read_one(app: Celery, queue: str) -> Any:
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        return channel._get(queue)


def test_a_message_appears_under_its_queue_name_only_once_written_whole(
    embedded: tuple[Settings, Celery, SessionFactory], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, app, _ = embedded
    renames: list[tuple[list[str], dict[str, Any]]] = []
    real_replace = os.replace

    def watching_replace(source: str, target: str) -> None:
        # At the moment of the rename: no message file is visible yet, and the hidden
        # partial file already holds the complete envelope.
        renames.append((message_files(settings), json.loads(Path(source).read_text())))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", watching_replace)
    app.send_task("clients.add", kwargs=payloads.client("FS1"))

    assert len(renames) == 1
    visible_before, envelope = renames[0]
    assert visible_before == []
    assert envelope["headers"]["task"] == "clients.add"
    assert len(message_files(settings)) == 1
    assert not list(queue_folder(settings).glob(".*"))  # no partial file left behind
    assert read_one(app, "events")["headers"]["task"] == "clients.add"


def test_unreadable_files_are_recorded_and_the_next_message_is_read(
    embedded: tuple[Settings, Celery, SessionFactory], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, app, sessions = embedded
    monkeypatch.setattr(runtime, "session_factory", lambda: sessions)
    folder = queue_folder(settings)
    # Named to sort before anything published now: kombu reads files in name order, and
    # its names start with the monotonic clock in ms, never with a zero.
    (folder / f"0001_{uuid.uuid4()}.events.msg").write_bytes(b"")
    (folder / f"0002_{uuid.uuid4()}.events.msg").write_bytes(b"\xff\xfe{not json")
    (folder / f"0003_{uuid.uuid4()}.events.msg").write_text('{"task": "clients.add"}')
    app.send_task("clients.add", kwargs=payloads.client("FS2"))

    assert read_one(app, "events")["headers"]["task"] == "clients.add"
    with sessions() as session:
        reasons = sorted(session.scalars(select(RejectedEvent.reason)))
    assert len(reasons) == 3
    assert all(r.startswith("queue entry is not a Celery message: ") for r in reasons)
    # kombu decodes with replacement characters, so the non-UTF-8 file fails as JSON too.
    assert sum("JSONDecodeError" in r for r in reasons) == 2
    assert sum("not a kombu envelope" in r for r in reasons) == 1
    assert message_files(settings) == []


def test_a_real_worker_keeps_up_with_concurrent_publishers_and_bad_files(
    embedded: tuple[Settings, Celery, SessionFactory], tmp_path: Path
) -> None:
    settings, app, sessions = embedded
    env = environ_without_settings()
    env["CLIENTFLOW_DATA_DIR"] = str(tmp_path)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "workers.app", "worker"),
                *(
                    "--concurrency",
                    "2",
                    "--loglevel",
                    "INFO",
                    "--without-mingle",
                    "--without-gossip",
                ),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    per_thread, threads = 80, 3
    try:

        def publish(prefix: str) -> None:
            for n in range(per_thread):
                app.send_task(
                    "clients.add",
                    kwargs=payloads.client(f"{prefix}{n}", send_welcome=False),
                )
                if n % 40 == 0:
                    bad = queue_folder(settings) / f"{n}_{uuid.uuid4()}.events.msg"
                    bad.write_bytes(b"")

        workers = [threading.Thread(target=publish, args=(f"T{t}-",)) for t in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()

        expected = per_thread * threads
        wait_for_db(
            sessions,
            lambda s: s.scalar(select(func.count()).select_from(ProcessedEvent)) == expected,
            f"{expected} events applied",
            timeout=120,
        )
        rejected = wait_for_db(
            sessions,
            lambda s: s.scalar(select(func.count()).select_from(RejectedEvent)) == 2 * threads,
            f"{2 * threads} empty files recorded",
        )
        assert rejected
        assert worker.poll() is None, log_path.read_text()[-3000:]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert "Unrecoverable error" not in log_path.read_text()
