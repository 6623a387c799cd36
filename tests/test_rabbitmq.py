"""A real worker on RabbitMQ: quorum queues, a plain Celery publisher, delays and dead letters.

Each test has a vhost of its own on the machine's RabbitMQ (or on a throwaway node of the
suite's, tests/rabbitmq_server.py), a fresh PostgreSQL database and the SMTP sink; the tests
are skipped, with one line saying why, only where rabbitmq-server is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import payloads
import pytest
from celery import Celery
from ops_helpers import run_ops, status_json
from rabbitmq_server import Vhost
from servers import refusing_connections
from smtp_sink import SmtpSink
from sqlalchemy import make_url, select
from wire import amqp_publish, task_headers
from worker_process import WorkerProcess, wait_until

from models.records import RejectedEvent
from workers.broker.rabbitmq import DEAD_LETTER_QUEUE

pytestmark = pytest.mark.worker

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def rabbit_worker_factory(
    rabbitmq_vhost: Vhost,
    new_postgres_database: Callable[[], str],
    smtp: SmtpSink,
    tmp_path: Path,
) -> Iterator[WorkerFactory]:
    """Workers on one vhost and one database, one after another (a test may stop one)."""
    database_url = new_postgres_database()
    made: list[WorkerProcess] = []

    def make(**extra_settings: str) -> WorkerProcess:
        worker = WorkerProcess(
            broker_url=rabbitmq_vhost.url,
            vhost=rabbitmq_vhost,
            database_url=database_url,
            smtp_url=smtp.url,
            workdir=tmp_path / f"worker-{len(made) + 1}",
            extra_settings=extra_settings,
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()


@pytest.fixture
def rabbit_worker(rabbit_worker_factory: WorkerFactory) -> WorkerProcess:
    worker = rabbit_worker_factory()
    worker.start()
    return worker


def test_an_event_is_applied_and_its_email_received(
    rabbit_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    payload = payloads.client("C1")
    rabbit_worker.publish("clients.add", payload)
    rabbit_worker.wait_applied(payload["event_id"])

    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == [payload["email"]]
    assert received.message["X-Clientflow-Event-Id"] == payload["event_id"]


def test_a_plain_celery_publisher_reaches_the_worker_without_declaring_the_queues(
    rabbit_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    """docs/publishing.md: stock Celery would declare `events` as a classic queue, which
    RabbitMQ refuses for a quorum queue (PRECONDITION_FAILED); with declare=[] it declares
    nothing and publishes to the default exchange, routing key `events`."""
    publisher = Celery(broker=rabbit_worker.broker_url)
    publisher.conf.task_serializer = "json"
    publisher.conf.broker_transport_options = {"confirm_publish": True}
    payload = payloads.client("C2")
    try:
        publisher.send_task("clients.add", queue="events", declare=[], kwargs=payload)
    finally:
        publisher.close()

    rabbit_worker.wait_applied(payload["event_id"])
    smtp.wait_for(1)


def test_the_event_and_email_queues_are_quorum_queues_with_a_dead_letter_exchange(
    rabbit_worker: WorkerProcess, rabbitmq_vhost: Vhost
) -> None:
    queues = rabbitmq_vhost.queues()
    names = ("events", "emails", "invoice_run", "celery", DEAD_LETTER_QUEUE)
    kinds = {name: queues[name].type for name in names}
    assert kinds == {
        "events": "quorum",
        "emails": "quorum",
        "invoice_run": "quorum",
        # Stock Celery's own declaration, so a publisher that forgets the queue reaches it.
        "celery": "classic",
        DEAD_LETTER_QUEUE: "quorum",
    }
    arguments = rabbitmq_vhost.node.ctl(
        "-q", "list_queues", "-p", rabbitmq_vhost.name, "--no-table-headers", "name", "arguments"
    )
    events_line = next(line for line in arguments.splitlines() if line.startswith("events\t"))
    assert '"x-dead-letter-exchange","dead-letter"' in events_line.replace(" ", "")
    assert '"x-delivery-limit",20' in events_line.replace(" ", "")
    # Celery's native delayed delivery: retries wait here, not in a worker.
    assert queues["celery_delayed_0"].type == "quorum"


def test_a_retry_waits_in_the_broker_not_in_the_worker(
    rabbit_worker_factory: WorkerFactory, rabbitmq_vhost: Vhost, smtp: SmtpSink
) -> None:
    """A countdown goes to Celery's delay queues: quorum queues hold no retry in a worker
    (its prefetch is static there, and a held retry would block it). One a 600 s countdown
    (retry_backoff_max) away waits in the broker too."""
    worker = rabbit_worker_factory(retry_backoff_base="8", retry_backoff_max="8")
    worker.start()
    smtp.temp_fail_data = 1  # the first DATA is refused with 451: the delivery retries
    payload = payloads.client("C3")
    worker.publish("clients.add", payload)
    worker.wait_applied(payload["event_id"])

    def delayed() -> dict[str, int]:
        queues = rabbitmq_vhost.queues().values()
        return {q.name: q.messages for q in queues if q.name.startswith("celery_delayed_")
                and q.messages}  # fmt: skip

    wait_until(delayed, "the email's retry in a celery_delayed_* queue")
    assert worker.app.control.inspect(timeout=2).scheduled() == {worker.hostname: []}
    (received,) = smtp.wait_for(1, timeout=60)
    assert received.rcpt_tos == [payload["email"]]

    worker.app.send_task("ops.housekeeping", countdown=600)
    later = wait_until(
        lambda: {n: m for n, m in delayed().items() if int(n.rsplit("_", 1)[1]) >= 9},
        "a 600 s countdown in a delay queue of 512 s or more",
    )
    assert sum(later.values()) == 1
    assert worker.app.control.inspect(timeout=2).scheduled() == {worker.hostname: []}


def test_a_retry_due_in_under_a_second_is_retried_not_dead_lettered(
    rabbit_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    """Celery's native delayed delivery raised ValueError for a countdown under 1 s, and the
    retry was rejected into the dead-letter queue (ClientflowCelery rounds it up)."""
    smtp.temp_fail_data = 1  # the delivery's first DATA gets a 451: a retry 0.1-0.2 s away
    payload = payloads.client("C6")
    rabbit_worker.publish("clients.add", payload)

    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == [payload["email"]]
    rabbit_worker.wait_idle()
    assert rabbit_worker.rows(RejectedEvent) == []


def test_an_undecodable_message_is_recorded_with_its_reason_and_the_next_flows(
    rabbit_worker: WorkerProcess, rabbitmq_vhost: Vhost
) -> None:
    amqp_publish(rabbitmq_vhost.url, b"\xff\xfe not json", task_headers("clients.add"))
    good = payloads.client("C4")
    rabbit_worker.publish("clients.add", good)

    rabbit_worker.wait_applied(good["event_id"])
    (refused,) = rabbit_worker.wait_rejected(1)
    assert refused.task_name == "<undecodable>"
    assert refused.reason.startswith("message body cannot be decoded (application/json)")
    assert "not json" in refused.payload
    # Recorded, then acknowledged: not dead-lettered as well (it would be recorded twice).
    rabbit_worker.wait_idle()
    assert rabbitmq_vhost.queues()[DEAD_LETTER_QUEUE].messages == 0
    assert len(rabbit_worker.rows(RejectedEvent)) == 1
    assert rabbit_worker.alive


def test_a_message_the_broker_dead_letters_is_recorded_with_the_brokers_reason(
    rabbit_worker_factory: WorkerFactory, rabbitmq_vhost: Vhost
) -> None:
    """An event whose time to live ran out in the queue (RabbitMQ dead-letters it) ends in
    the rejected events with the broker's reason, under its event id."""
    first = rabbit_worker_factory()
    first.start()  # declares the queues, the dead-letter exchange and its queue
    first.stop()
    payload = payloads.client("C5")
    first.app.send_task("clients.add", kwargs=payload, expires=0.2)

    def queued_or_dead_lettered() -> int:
        queues = rabbitmq_vhost.queues()
        return queues["events"].messages + queues[DEAD_LETTER_QUEUE].messages

    # The broker may expire it at once or when a consumer comes; either way it is there.
    wait_until(lambda: queued_or_dead_lettered() == 1, "the event in the broker")

    second = rabbit_worker_factory()
    second.start()
    (recorded,) = second.wait_rejected(1)
    assert recorded.event_id == payload["event_id"]
    assert recorded.task_name == "clients.add"
    assert recorded.reason == (
        "dead-lettered by RabbitMQ from queue 'events' (expired): its time to live ran out "
        "before a worker took it"
    )
    with second.sessions() as session:
        assert session.scalars(select(RejectedEvent.event_id)).all() == [payload["event_id"]]
    # Acknowledged once recorded; the broker's count may lag the acknowledgement a moment
    # (a second copy left in the queue would keep it at 1 and fail here).
    wait_until(
        lambda: rabbitmq_vhost.queues()[DEAD_LETTER_QUEUE].messages == 0,
        "the dead-lettered message acknowledged",
    )


def test_ops_status_reads_queue_depths_from_rabbitmq(
    rabbit_worker_factory: WorkerFactory, smtp: SmtpSink
) -> None:
    first = rabbit_worker_factory()
    before = status_json(first)  # a vhost where no worker has declared anything yet
    assert before.problems == [
        "broker: no queue celery, emails, events, invoice_run, dead-letter yet: start a worker, "
        "which declares them"
    ]

    first.start()  # declares the queues
    first.stop()
    events = [payloads.client(f"C{i}") for i in range(3)]
    for payload in events:
        first.publish("clients.add", payload)
    snapshot = status_json(first)
    assert {q.name: q.depth for q in snapshot.queues} == {
        "celery": 0, "emails": 0, "events": 3, "invoice_run": 0, DEAD_LETTER_QUEUE: 0,
    }  # fmt: skip
    assert snapshot.problems == []
    # Neither is available over AMQP: None in the JSON, said in words in the table.
    assert {(q.oldest_age_seconds, q.unacked) for q in snapshot.queues} == {(None, None)}
    human = run_ops(first, "status", check=False).stdout
    row = next(line for line in human.splitlines() if line.startswith("│ events "))
    assert [cell.strip() for cell in row.strip("│").split("│")][:4] == [
        "events", "3", "not available", "not available",
    ], human  # fmt: skip
    assert "not available: RabbitMQ does not tell over AMQP" in human

    second = rabbit_worker_factory()
    second.start()
    second.wait_applied(*(p["event_id"] for p in events))
    smtp.wait_for(3)
    snapshot = status_json(second)
    assert snapshot.workers is not None
    assert [w.name for w in snapshot.workers] == [second.hostname]
    assert snapshot.queues[[q.name for q in snapshot.queues].index("events")].depth == 0


# What the dead-letter consumer logs when it could not record a dead letter and puts it back.
PUT_BACK = "a dead-lettered message goes back to its queue"


def test_a_refusal_made_while_the_database_is_down_is_recorded_once_it_is_back(
    rabbit_worker: WorkerProcess, rabbitmq_vhost: Vhost, postgres_admin_url: str
) -> None:
    """The worker cannot write the refusal of a bad message while its database is away: it
    rejects the message, RabbitMQ dead-letters it, and the dead-letter consumer keeps putting
    it back until it can be written. Nothing is lost, and it is recorded once."""
    database = make_url(rabbit_worker.database_url).database
    assert database is not None, rabbit_worker.database_url
    with refusing_connections(postgres_admin_url, database):
        amqp_publish(rabbitmq_vhost.url, b"\xff\xfe not json", task_headers("clients.add"))
        # Tried, put back, and tried again: it goes round while the database is away.
        wait_until(
            lambda: rabbit_worker.log_text().count(PUT_BACK) >= 2,
            "the dead letter tried and put back twice while the database is down",
        )
        assert "could not record a malformed message" in rabbit_worker.log_text()

    (recorded,) = rabbit_worker.wait_rejected(1)
    assert recorded.task_name == "clients.add"
    assert recorded.reason == (
        "dead-lettered by RabbitMQ from queue 'events' (rejected): a worker rejected it "
        "(a refusal it could not record at the time)"
    )
    assert "not json" in recorded.payload
    wait_until(
        lambda: rabbitmq_vhost.queues()[DEAD_LETTER_QUEUE].messages == 0,
        "the dead-lettered message acknowledged once recorded",
    )
    # The worker goes on: the next event is applied, and the refusal was written once.
    good = payloads.client("C7")
    rabbit_worker.publish("clients.add", good)
    rabbit_worker.wait_applied(good["event_id"])
    assert len(rabbit_worker.rows(RejectedEvent)) == 1
    assert rabbit_worker.alive
