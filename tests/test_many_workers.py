"""Many workers (issue 12, item 2): three `celery worker` processes, as on three hosts, consume
the same queues on one broker (Redis, then RabbitMQ: every test runs on both) and one
PostgreSQL database, and race on the same records.

Each test publishes its races as pairs, back to back in one burst with the workers already up,
so that two pool processes (on different workers, mostly) take the two halves at the same
moment. The workers' logs tell which worker ran each half, whether both were in flight at once
and whether they met in the database (race_kit.RaceReport); a test whose pairs never raced
fails rather than passes. After every test the crew's audit checks the whole database: no
worker died, no dead letter, every email sent exactly once (counted at the SMTP sink per
X-Clientflow-Idempotency-Key), every refusal with a reason, nothing left waiting, no error in
any log.

The crew is shared by the module, one per broker (starting three workers costs seconds of CPU
each); every test works on clients of its own prefix and leaves the crew settled. On RabbitMQ
the crew has a vhost of its own on the machine's node (or the suite's throwaway one), and the
RabbitMQ cases are skipped, with one line, only where rabbitmq-server is not installed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import payloads
import pytest
from race_kit import Crew, Pair
from smtp_sink import SmtpSink
from sqlalchemy import func, select
from worker_process import BROKERS, broker_for, worker_crew

from models.clients import Client, Contact
from models.contracts import AddClient
from models.emails import EmailMessage
from models.records import AuditEvent, RejectedEvent
from services.clients import WELCOME_TEMPLATE
from services.mail.queue import idempotency_key

pytestmark = pytest.mark.worker

# Node names as on three hosts; two pool processes each, six events in flight at once.
NODES = ("north@host-a", "south@host-b", "east@host-c")
RACES = 30
BURST_CLIENTS = 150
NOTIFICATION_TEMPLATE = "general_announcement"


@pytest.fixture(scope="module", params=BROKERS)
def crew(
    request: pytest.FixtureRequest,
    new_postgres_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Crew]:
    with (
        broker_for(request.param, request) as (broker_url, vhost),
        SmtpSink() as smtp,
        worker_crew(
            NODES,
            broker_url=broker_url,
            vhost=vhost,
            database_url=new_postgres_database(),
            smtp_url=smtp.url,
            root=tmp_path_factory.mktemp("crew"),
        ) as workers,
    ):
        yield Crew(workers, smtp)


def add_clients(crew: Crew, prefix: str, **fields: Any) -> list[dict[str, Any]]:
    """RACES clients, published and applied before the race starts."""
    added = [payloads.client(f"{prefix}{n:03d}", **fields) for n in range(RACES)]
    for payload in added:
        crew.publish("clients.add", payload)
    crew.workers[0].wait_applied(*(p["event_id"] for p in added), timeout=120)
    crew.settle()
    return added


def welcome_key(payload: dict[str, Any]) -> str:
    return idempotency_key(payload["event_id"], payload["email"], WELCOME_TEMPLATE)


def test_two_contacts_added_at_once_to_one_client(crew: Crew) -> None:
    """Two new contacts: both exist. One contact id twice: one exists, the other add is
    refused as "contact '...' already exists"."""
    clients = add_clients(crew, "KC", send_welcome=False)
    both: list[Pair] = []
    same_id: list[Pair] = []
    sent: dict[str, dict[str, Any]] = {}
    for n, client in enumerate(clients):
        client_id = client["client_id"]
        # Two contacts of their own sharing one mailbox: no rule refuses that (contacts.py
        # checks only that a contact id is new; contact emails may repeat).
        shared = f"desk{n}@kc.example"
        a = payloads.contact(f"{client_id}-A", client_id, "general", email=shared)
        b = payloads.contact(f"{client_id}-B", client_id, "invoice", email=shared)
        both.append(crew.race(("contacts.add", a), ("contacts.add", b)))
        # One contact id from two systems at once: contact ids are unique, one must be refused.
        x = payloads.contact(f"{client_id}-S", client_id, firstname="Xavier")
        y = payloads.contact(f"{client_id}-S", client_id, firstname="Yvonne")
        same_id.append(crew.race(("contacts.add", x), ("contacts.add", y)))
        sent.update({p["event_id"]: p for p in (a, b, x, y)})
    crew.settle()
    report = f"two contacts: {crew.report(both)}; one contact id twice: {crew.report(same_id)}"
    print(report)

    event_ids = list(sent)
    processed, refused = crew.processed(event_ids), crew.refusals(event_ids)
    with crew.sessions() as session:
        contacts = {c.id: c for c in session.scalars(select(Contact))}
        audited = Counter(
            session.scalars(
                select(AuditEvent.event_id).where(AuditEvent.event_id.in_(event_ids))
            )
        )
    problems: list[str] = []
    for pair in both:
        for event_id in pair.event_ids:
            payload = sent[event_id]
            contact = contacts.get(payload["contact_id"])
            if event_id not in processed or event_id in refused:
                problems.append(f"{event_id} not applied: {refused.get(event_id)}")
            elif contact is None or (contact.client_id, contact.email) != (
                payload["client_id"],
                payload["email"],
            ):
                found = None if contact is None else (contact.client_id, contact.email)
                problems.append(f"{event_id}: contact {payload['contact_id']} is {found}")
    for pair in same_id:
        won = [e for e in pair.event_ids if e in processed]
        lost = [e for e in pair.event_ids if e not in processed]
        if len(won) != 1:
            problems.append(f"{pair.event_ids}: {len(won)} applied, refused {lost}")
            continue
        winner, loser = sent[won[0]], sent[lost[0]]
        contact = contacts.get(winner["contact_id"])
        expected = [f"contact {loser['contact_id']!r} already exists"]
        if refused.get(lost[0]) != expected or won[0] in refused:
            problems.append(f"{lost[0]} refused with {refused.get(lost[0])}, not {expected}")
        if contact is None or contact.firstname != winner["firstname"]:
            name = None if contact is None else contact.firstname
            problems.append(f"{winner['contact_id']} is {name}'s, not {winner['firstname']}'s")
    problems += [f"{e}: {audited[e]} audit rows" for e in processed if audited[e] != 1]
    assert problems == [], f"{report}\n{problems[:10]}"
    crew.audit()
    crew.report(both + same_id).assert_raced()


def test_two_clients_added_at_once_with_one_email(crew: Crew) -> None:
    """Exactly one added, with its welcome email; the other refused as a Duplicate Email
    Address naming the client that has it, and sent nothing."""
    pairs: list[Pair] = []
    sent: dict[str, dict[str, Any]] = {}
    for n in range(RACES):
        # The same mailbox spelt two ways: "Duplicate Email Address" ignores case.
        a = payloads.client(f"EM{n:03d}A", email=f"same{n}@em.example")
        b = payloads.client(f"EM{n:03d}B", email=f"Same{n}@EM.example")
        pairs.append(crew.race(("clients.add", a), ("clients.add", b)))
        sent.update({a["event_id"]: a, b["event_id"]: b})
    crew.settle()
    report = crew.report(pairs)
    print(f"one email twice: {report}")

    event_ids = list(sent)
    processed, refused = crew.processed(event_ids), crew.refusals(event_ids)
    received = crew.received_keys()
    with crew.sessions() as session:
        clients = set(session.scalars(select(Client.id).where(Client.id.like("EM%"))))
    problems: list[str] = []
    for pair in pairs:
        won = [e for e in pair.event_ids if e in processed]
        if len(won) != 1:
            reasons = [refused.get(e) for e in pair.event_ids]
            problems.append(f"{pair.event_ids}: {len(won)} applied, refusals {reasons}")
            continue
        (lost,) = set(pair.event_ids) - set(won)
        winner, loser = sent[won[0]], sent[lost]
        # As the contract keeps it (the domain lower-cased).
        email = AddClient.model_validate(loser).email
        expected = [
            f"Duplicate Email Address: {email} is already used by client {winner['client_id']!r}"
        ]
        if refused.get(lost) != expected or won[0] in refused:
            problems.append(f"{lost} refused with {refused.get(lost)}, not {expected}")
        if {winner["client_id"], loser["client_id"]} & clients != {winner["client_id"]}:
            problems.append(f"{pair.event_ids}: clients {clients & {winner['client_id']}}")
        welcomes = (received[welcome_key(winner)], received[welcome_key(loser)])
        if welcomes != (1, 0):
            problems.append(f"{pair.event_ids}: welcome emails (winner, loser) {welcomes}")
    assert problems == [], f"{report}\n{problems[:10]}"
    crew.audit()
    report.assert_raced()


def test_two_updates_of_one_client_at_once(crew: Crew) -> None:
    """Both applied; the client ends as one of the two, whole (never a mix), and the audit
    trail leads from the original through one update to the other."""
    clients = add_clients(crew, "UP", send_welcome=False, city="Origin", postcode="O0 0OO")
    pairs: list[Pair] = []
    sent: dict[str, dict[str, Any]] = {}
    for n, client in enumerate(clients):
        client_id = client["client_id"]
        a = payloads.event(client_id, city=f"Aton {n}", postcode="A1 1AA", email=f"a{n}@up.example")
        b = payloads.event(client_id, city=f"Bton {n}", postcode="B2 2BB", email=f"b{n}@up.example")
        pairs.append(crew.race(("clients.update", a), ("clients.update", b)))
        sent.update({a["event_id"]: a, b["event_id"]: b})
    crew.settle()
    report = crew.report(pairs)
    print(f"two updates: {report}")

    event_ids = list(sent)
    processed, refused = crew.processed(event_ids), crew.refusals(event_ids)
    fields = ("city", "postcode", "email")
    problems: list[str] = []
    with crew.sessions() as session:
        for pair, original in zip(pairs, clients, strict=True):
            updates = [sent[e] for e in pair.event_ids]
            row = session.get(Client, original["client_id"])
            assert row is not None
            final = {name: getattr(row, name) for name in fields}
            if set(pair.event_ids) - processed or set(pair.event_ids) & set(refused):
                reasons = [refused.get(e) for e in pair.event_ids]
                problems.append(f"{pair.event_ids}: not both applied, refusals {reasons}")
            if final not in [{name: u[name] for name in fields} for u in updates]:
                problems.append(f"{row.id} ended as neither update: {final}")
            trail = list(
                session.scalars(
                    select(AuditEvent).where(AuditEvent.event_id.in_(pair.event_ids))
                )
            )
            start = {name: original[name] for name in fields}
            if not _chains(start, final, [row.changes for row in trail]):
                problems.append(
                    f"{row.id}: the audit trail {[r.changes for r in trail]} does not lead "
                    f"from {start} to {final}"
                )
    assert problems == [], f"{report}\n{len(problems)} problems: {problems[:6]}"
    crew.audit()
    report.assert_raced()


def _chains(start: dict[str, Any], final: dict[str, Any], trail: list[dict[str, Any]]) -> bool:
    """True when the audit rows, in one of their orders, each change every field from what
    the one before left to their new value, ending at final: no change recorded from a value
    the client no longer had, none lost."""
    for order in (trail, trail[::-1]):
        state = dict(start)
        for changes in order:
            if any(state[name] != change[0] for name, change in changes.items()):
                break
            if set(changes) != set(state):
                break
            state.update({name: change[1] for name, change in changes.items()})
        else:
            if state == final:
                return True
    return False


def test_the_same_event_delivered_to_two_workers_at_once(crew: Crew) -> None:
    """One copy applied, the other a duplicate (never a refusal), one welcome email."""
    pairs: list[Pair] = []
    sent: list[dict[str, Any]] = []
    for n in range(RACES):
        payload = payloads.client(f"DU{n:03d}")
        pairs.append(crew.race(("clients.add", payload), ("clients.add", payload)))
        sent.append(payload)
    crew.settle()
    report = crew.report(pairs)
    print(f"one event twice: {report}")

    event_ids = [p["event_id"] for p in sent]
    processed, refused = crew.processed(event_ids), crew.refusals(event_ids)
    received = crew.received_keys()
    with crew.sessions() as session:
        logged = Counter(
            session.scalars(
                select(EmailMessage.event_id).where(EmailMessage.event_id.in_(event_ids))
            )
        )
    runs = crew.runs()
    problems: list[str] = []
    for pair, payload in zip(pairs, sent, strict=True):
        event_id = payload["event_id"]
        outcomes = sorted(runs[t].outcome if t in runs else "?" for t in pair.task_ids)
        if outcomes != ["applied", "duplicate"]:
            problems.append(f"{event_id}: outcomes {outcomes}")
        if event_id not in processed or event_id in refused:
            problems.append(f"{event_id}: not applied, refusals {refused.get(event_id)}")
        if (logged[event_id], received[welcome_key(payload)]) != (1, 1):
            problems.append(
                f"{event_id}: {logged[event_id]} welcome emails logged, "
                f"{received[welcome_key(payload)]} received"
            )
    assert problems == [], f"{report}\n{problems[:10]}"
    crew.audit()
    report.assert_raced()


def test_a_burst_across_workers_sends_every_welcome_once(crew: Crew) -> None:
    """Each client's add, then a notification to it right away (it may overtake the add, wait
    for it and be released, on any worker), and every tenth add published twice."""
    sent: list[tuple[str, dict[str, Any]]] = []
    expected: set[str] = set()
    for n in range(BURST_CLIENTS):
        client = payloads.client(f"BU{n:03d}")
        notification = payloads.notification(client["client_id"])
        sent += [("clients.add", client), ("notifications.send", notification)]
        if n % 10 == 0:
            sent.append(("clients.add", client))
        expected |= {
            welcome_key(client),
            idempotency_key(notification["event_id"], client["email"], NOTIFICATION_TEMPLATE),
        }
    task_ids = [crew.publish(name, payload) for name, payload in sent]
    crew.settle()

    event_ids = sorted({payload["event_id"] for _, payload in sent})
    processed = crew.processed(event_ids)
    received = crew.received_keys()
    runs = crew.runs()
    nodes = Counter(runs[t].node if t in runs else "?" for t in task_ids)
    outcomes = Counter(runs[t].outcome if t in runs else "?" for t in task_ids)
    with crew.sessions() as session:
        logged = set(
            session.scalars(
                select(EmailMessage.idempotency_key).where(EmailMessage.event_id.in_(event_ids))
            )
        )
        held = session.scalar(
            select(func.count()).where(
                RejectedEvent.event_id.in_(event_ids), RejectedEvent.waiting_for.is_not(None)
            )
        )
    seen = (
        f"{len(sent)} messages, {len(event_ids)} events, {len(processed)} applied; tasks by "
        f"worker {dict(nodes)}, outcomes {dict(outcomes)} ({held} notifications held for "
        f"their client, then released); {len(expected)} emails owed, {len(logged)} logged, "
        f"{sum(received[k] for k in expected)} received"
    )
    print(f"burst: {seen}")
    missing = sorted(set(event_ids) - processed)
    assert missing == [], f"{seen}; not applied: {missing[:10]}\n{crew.log_tails()}"
    assert logged == expected, f"{seen}; the message log differs from what the burst owes"
    counts = Counter(received[key] for key in expected)
    assert counts == {1: len(expected)}, f"{seen}; keys by times received: {dict(counts)}"
    crew.audit()
    # The burst crossed workers: each of the three finished some of it.
    assert set(nodes) == {w.hostname for w in crew.workers}, seen
