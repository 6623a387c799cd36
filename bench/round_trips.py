"""Database round trips per event on the hot path, counted, not timed.

    .venv/bin/python bench/round_trips.py [--events 200] [--admin-url postgresql://...]

Applies `clients.add` events (with the welcome email) through services.dispatch in this
process, as a pool process does, on a throwaway PostgreSQL database, and sends each event's
email right after its commit the way tasks.emails does (to .eml files: the SMTP side is not
what is counted). Every trip to the server is counted where SQLAlchemy makes it: statements,
the BEGIN psycopg sends before a transaction's first statement, commits, and the ping of each
pool checkout (pool_pre_ping). The worker's CPU is mostly Python around these trips (a
profile of the clients.add phase of bench/run.py shows it), so their number is the figure to
bring down.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.pool import ConnectionPoolEntry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import payloads  # noqa: E402
from servers import create_database, drop_database  # noqa: E402

from models.engine import make_engine  # noqa: E402
from services.db import make_session_factory  # noqa: E402
from services.dispatch import process_event  # noqa: E402
from services.mail.delivery import deliver_claimed  # noqa: E402
from services.mail.transports import FileTransport  # noqa: E402
from workers import migrate  # noqa: E402


class Trips:
    """Counts each kind of trip an engine makes."""

    def __init__(self, engine: Engine) -> None:
        self.counts: Counter[str] = Counter()
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        event.listen(engine.pool, "checkout", self._checkout)
        self.pings = bool(engine.pool._pre_ping)
        self.show = False

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.counts["statements"] += 1
        if self.show:
            print("   ", " ".join(statement.split())[:110])

    # With isolation_level AUTOCOMMIT SQLAlchemy still fires these, but psycopg sends nothing.
    def _begin(self, conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            self.counts["BEGIN"] += 1

    def _commit(self, conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            self.counts["COMMIT"] += 1

    def _checkout(self, _dbapi: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        if self.pings:
            self.counts["pings"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--show", action="store_true", help="print the statements of one")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"clientflow_trips_{uuid.uuid4().hex[:8]}"
    url = create_database(args.admin_url, name)
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with tempfile.TemporaryDirectory() as mail_dir:
            transport = FileTransport(Path(mail_dir))
            trips = Trips(engine)

            class SendNow:
                def ready(self) -> bool:
                    return True

                def __call__(self, messages: list[Any]) -> None:
                    deliver_claimed(messages, factory, transport, "billing@example.com", 3)

            cpu_started = time.process_time()
            for number in range(args.events):
                trips.show = args.show and number == 1
                result = process_event(
                    "clients.add",
                    payloads.client(f"RT{number}", email=f"rt{number}@example.com"),
                    session_factory=factory,
                    publish=lambda *_a, **_k: None,
                    company_name="Example Hosting",
                    deliver_now=SendNow(),
                )
                assert result.outcome.value == "applied", result
            cpu_ms = 1000 * (time.process_time() - cpu_started) / args.events
        engine.dispose()
    finally:
        drop_database(args.admin_url, name)
    total = sum(trips.counts.values())
    print(f"clients.add + welcome, {args.events} events, round trips per event:")
    for kind in ("pings", "BEGIN", "statements", "COMMIT"):
        print(f"  {kind:<11} {trips.counts[kind] / args.events:5.2f}")
    print(f"  {'total':<11} {total / args.events:5.2f}")
    print(f"CPU of this process per event: {cpu_ms:.2f} ms (render, compose, SQLAlchemy, psycopg)")


if __name__ == "__main__":
    main()
