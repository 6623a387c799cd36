"""Database round trips per event on the hot path, counted, not timed.

    .venv/bin/python bench/round_trips.py [--event notifications.send] [--events 200] [--show]
                                          [--list-unsubscribe] [--calls [TOP]] [--batch N]

Applies `clients.add` events (with the welcome email), or `notifications.send` to a client
with 10 contacts ticked, through services.dispatch in this process, as a pool process does, on
a throwaway PostgreSQL database, and sends each event's emails right after its commit the way
tasks.emails does (to .eml files: the SMTP side is not what is counted). Every trip to the
server is counted where SQLAlchemy makes it: statements, the BEGIN psycopg sends before a
transaction's first statement, commits, and the ping of a pool checkout (models.engine: of a
connection idle for a while).
The worker's CPU is mostly Python around these trips (a profile of the clients.add phase of
bench/run.py shows it), so their number is the figure to bring down. --list-unsubscribe
signs a one-click unsubscribe link into every email (off by default, as in the settings).
--batch N applies the events N at a time (services/batch.py, as a worker does with a backlog)
and sends each batch's emails together.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import payloads  # noqa: E402
from servers import create_database, drop_database  # noqa: E402

from models.engine import make_engine  # noqa: E402
from services.batch import process_batch  # noqa: E402
from services.db import SessionFactory, make_session_factory  # noqa: E402
from services.dispatch import process_event  # noqa: E402
from services.mail.delivery import deliver_claimed  # noqa: E402
from services.mail.transports import FileTransport  # noqa: E402
from services.opt_outs import DEFAULT_OPT_OUTS, OptOutPolicy  # noqa: E402
from workers import migrate  # noqa: E402


class Trips:
    """Counts each kind of trip an engine makes."""

    def __init__(self, engine: Engine) -> None:
        self.counts: Counter[str] = Counter()
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        # The pings models.engine sends at checkout (a connection idle for a while).
        ping = engine.dialect.do_ping

        def counted_ping(dbapi_connection: Any) -> bool:
            self.counts["pings"] += 1
            return ping(dbapi_connection)

        engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]
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


WITH_LINKS = OptOutPolicy(
    unsubscribe_url="https://billing.example.com/unsubscribe?token={token}", secret=b"b" * 32
)


# Each email sent is one UPDATE more, which the session does not wait for (it is on the wire
# before the next email, services/mail/sent_records.py): not a round trip, and not seen by
# SQLAlchemy's events, so counted here.
SENT_RECORDS: Counter[str] = Counter()


class SendNow:
    """Sends an event's emails right after its commit, as tasks.emails does (to files)."""

    def __init__(self, factory: SessionFactory, transport: FileTransport) -> None:
        self.factory, self.transport = factory, transport

    def ready(self) -> bool:
        return True

    def __call__(self, messages: list[Any]) -> None:
        report = deliver_claimed(messages, self.factory, self.transport, "billing@example.com", 3)
        SENT_RECORDS["sent"] += len(report.sent)


def apply(
    factory: SessionFactory,
    transport: FileTransport,
    task: str,
    payload: Any,
    opt_outs: OptOutPolicy = DEFAULT_OPT_OUTS,
) -> None:
    """One event as a pool process applies it, its emails sent right after its commit."""

    result = process_event(
        task, payload, session_factory=factory, publish=lambda *_a, **_k: None,
        company_name="Example Hosting", deliver_now=SendNow(factory, transport),
        opt_outs=opt_outs,
    )  # fmt: skip
    assert result.outcome.value == "applied", result


def apply_batch(
    factory: SessionFactory,
    transport: FileTransport,
    task: str,
    batch: list[Any],
    opt_outs: OptOutPolicy = DEFAULT_OPT_OUTS,
) -> None:
    """Events applied together, as tasks/batching.py has a pool process do with a backlog;
    any the batch leaves applied on their own after it."""

    results = process_batch(
        task, batch, session_factory=factory, publish=lambda *_a, **_k: None,
        company_name="Example Hosting", deliver_now=SendNow(factory, transport),
        opt_outs=opt_outs,
    )  # fmt: skip
    for payload, result in zip(batch, results, strict=True):
        if result is None:
            apply(factory, transport, task, payload, opt_outs)


def workload(kind: str, events: int) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]], int]:
    """(set-up events, measured events, emails per measured event)."""
    if kind == "clients.add":
        adds = [
            ("clients.add", payloads.client(f"RT{n}", email=f"rt{n}@example.com"))
            for n in range(events)
        ]
        return [], adds, 1
    # notifications.send to a client with 10 contacts ticked for the category (+ the holder),
    # as bench/run.py's notifications phase.
    setup: list[tuple[str, Any]] = [("clients.add", payloads.client("N1", send_welcome=False))]
    setup += [("contacts.add", payloads.contact(f"K{n}", "N1", "general")) for n in range(10)]
    sends = [("notifications.send", payloads.notification("N1", "general")) for _ in range(events)]
    return setup, sends, 11


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--event", choices=["clients.add", "notifications.send"],
                        default="clients.add")  # fmt: skip
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--show", action="store_true", help="print the statements of one")
    parser.add_argument("--list-unsubscribe", action="store_true",
                        help="sign an unsubscribe link into every email")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="events applied together")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--calls", metavar="TOP", type=int, nargs="?", const=15, default=None,
                        help="profile the events (cProfile on CPU time): Python function calls "
                        "per event, a figure other load does not move, and the TOP functions "
                        "of clientflow and its libraries by CPU, with their calls per event",
                        )  # fmt: skip
    args = parser.parse_args()
    setup, measured, emails_each = workload(args.event, args.events)
    opt_outs = WITH_LINKS if args.list_unsubscribe else DEFAULT_OPT_OUTS
    name = f"clientflow_trips_{uuid.uuid4().hex[:8]}"
    url = create_database(args.admin_url, name)
    try:
        migrate.upgrade(url)
        engine = make_engine(url, ping_when_idle=True)  # as a worker's (tasks.runtime)
        factory = make_session_factory(engine)
        with tempfile.TemporaryDirectory() as mail_dir:
            transport = FileTransport(Path(mail_dir))
            for task, payload in setup:
                apply(factory, transport, task, payload)
            trips = Trips(engine)
            SENT_RECORDS.clear()
            # CPU time, not the wall clock: waits on PostgreSQL (and other load) stay out.
            profile = cProfile.Profile(time.process_time) if args.calls is not None else None
            cpu_started = time.process_time()
            for number in range(0, len(measured), args.batch):
                trips.show = args.show and number == args.batch
                task = measured[number][0]
                batch = [payload for _, payload in measured[number : number + args.batch]]
                if profile is not None:
                    profile.enable()
                if args.batch == 1:
                    apply(factory, transport, task, batch[0], opt_outs)
                else:
                    apply_batch(factory, transport, task, batch, opt_outs)
                if profile is not None:
                    profile.disable()
            cpu_ms = 1000 * (time.process_time() - cpu_started) / args.events
        engine.dispose()
    finally:
        drop_database(args.admin_url, name)
    total = sum(trips.counts.values())
    batched = f", applied {args.batch} at a time" if args.batch > 1 else ""
    print(f"{args.event}, {args.events} events{batched}, {emails_each} email(s) each; round trips:")
    print(f"  {'':<11} {'per event':>9} {'per email':>9}")
    for kind in ("pings", "BEGIN", "statements", "COMMIT"):
        each = trips.counts[kind] / args.events
        print(f"  {kind:<11} {each:9.2f} {each / emails_each:9.2f}")
    print(f"  {'total':<11} {total / args.events:9.2f} {total / args.events / emails_each:9.2f}")
    unwaited = SENT_RECORDS["sent"] / args.events
    print(f"  and, not waited for, sent records: {unwaited:.2f} per event,"
          f" {unwaited / emails_each:.2f} per email")  # fmt: skip
    print(f"CPU of this process per event: {cpu_ms:.2f} ms, per email {cpu_ms / emails_each:.2f}"
          + (" (under cProfile: slower)" if profile is not None else ""))  # fmt: skip
    if profile is not None:
        print_calls(pstats.Stats(profile), args.events, args.calls)


# Where the CPU of an event goes, as far as the names tell: our layers and the libraries they
# spend it in (everything else is below one of these, or Python's own).
PROFILED = (
    "/services/", "/models/", "/tasks/", "jinja2/environment", "email/generator",
    "orm/session.py", "orm/persistence", "engine/base.py", "psycopg/cursor.py",
)  # fmt: skip


def print_calls(stats: pstats.Stats, events: int, top: int) -> None:
    """Python function calls per event, and the TOP functions by cumulative CPU per event."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats' own table
    calls = sum(entry[1] for entry in table.values())
    print(f"Python function calls per event: {calls / events:,.0f}")
    rows = [
        (cumulative / events * 1000, ncalls / events, function, path, line)
        for (path, line, function), (_, ncalls, _own, cumulative, _callers) in table.items()
        if any(part in path for part in PROFILED)
    ]
    print("  CPU ms/event (profiled)  calls/event  function")
    for ms, per_event, function, path, line in sorted(rows, reverse=True)[:top]:
        where = "/".join(Path(path).parts[-2:])
        print(f"  {ms:23.3f}  {per_event:11.1f}  {function} ({where}:{line})")


if __name__ == "__main__":
    main()
