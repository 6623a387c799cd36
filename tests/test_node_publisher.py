"""Events published from Node.js reach a real worker: with celery-node, and as a protocol 2
message built by hand (tests/node, docs/publishing.md), on Redis and on RabbitMQ.

Each test publishes before its worker starts, looks at what Node left in the queues, then
starts the worker and checks the effects in PostgreSQL and at the SMTP sink. On RabbitMQ the
queues are declared first, as the workers declare them (a message published to a queue that
does not exist is dropped), in a vhost of the test's own. Skipped, with one line saying why,
where Node.js or npm is missing or tests/node's packages cannot be installed, and on RabbitMQ
where rabbitmq-server is not installed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqp
import payloads
import pytest
from kombu import Connection
from node_publishers import NodeUnavailable, node_modules, publish
from smtp_sink import SmtpSink
from worker_process import BROKERS, WorkerProcess, broker_for

from models import Client, Contact, RejectedEvent
from models.contracts import CONTRACT_VERSION
from workers.ops.queues import read_queues

pytestmark = pytest.mark.worker


@pytest.fixture(params=BROKERS)
def worker(
    request: pytest.FixtureRequest,
    new_postgres_database: Callable[[], str],
    smtp: SmtpSink,
    tmp_path: Path,
) -> Iterator[WorkerProcess]:
    """Not started: the test publishes first, then starts it."""
    with broker_for(request.param, request) as (broker_url, vhost):
        process = WorkerProcess(
            broker_url=broker_url,
            vhost=vhost,
            database_url=new_postgres_database(),
            smtp_url=smtp.url,
            workdir=tmp_path / "worker",
        )
        try:
            if vhost is not None:
                process.declare_queues()
            yield process
        finally:
            process.close()


@pytest.fixture(scope="module")
def modules() -> Iterator[Path]:
    try:
        yield node_modules()
    except NodeUnavailable as exc:
        pytest.skip(str(exc))


@dataclass(frozen=True)
class Queued:
    """A message waiting in a queue, as either broker keeps it."""

    headers: dict[str, Any]
    body: Any  # the JSON body, decoded
    content_type: str | None
    content_encoding: str | None
    exchange: str
    routing_key: str
    # Redis only: the envelope's properties (the transport's bookkeeping); None on RabbitMQ,
    # where the broker keeps them.
    envelope: dict[str, Any] | None


def queued(worker: WorkerProcess, queue: str) -> list[Queued]:
    """The messages waiting in `queue`, oldest first, left where they are."""
    if worker.vhost is None:
        # Publishers LPUSH, workers pop the right end.
        entries = [json.loads(raw) for raw in reversed(worker.redis.lrange(queue, 0, -1))]
        return [_from_envelope(entry) for entry in entries]
    return _peek_amqp(worker.broker_url, queue)


def _from_envelope(entry: dict[str, Any]) -> Queued:
    properties = entry["properties"]
    assert properties["body_encoding"] == "base64"
    return Queued(
        headers=entry["headers"],
        body=json.loads(base64.b64decode(entry["body"]).decode("utf-8")),
        content_type=entry["content-type"],
        content_encoding=entry["content-encoding"],
        exchange=properties["delivery_info"]["exchange"],
        routing_key=properties["delivery_info"]["routing_key"],
        envelope=properties,
    )


BROKER_HEADERS = frozenset({"x-delivery-count"})


def _peek_amqp(url: str, queue: str) -> list[Queued]:
    """Every message of the queue got without acknowledging it; closing the channel gives
    them all back, in their order, for the worker."""
    parts = amqp_parts(url)
    found: list[Queued] = []
    with amqp.Connection(**parts) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            info = message.delivery_info
            # Without what the broker adds: a quorum queue counts deliveries (x-delivery-count).
            headers = message.headers or {}
            published = {k: v for k, v in headers.items() if k not in BROKER_HEADERS}
            found.append(
                Queued(
                    headers=published,
                    body=json.loads(message.body),
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    exchange=info["exchange"],
                    routing_key=info["routing_key"],
                    envelope=None,
                )
            )
        channel.close()
    return found


def amqp_parts(url: str) -> dict[str, Any]:
    """py-amqp's connection arguments for an amqp:// URL (kombu parses it the same way)."""
    info = Connection(url).info()
    return {
        "host": f"{info['hostname']}:{info['port']}",
        "userid": info["userid"],
        "password": info["password"],
        "virtual_host": info["virtual_host"],
    }


def refusals(worker: WorkerProcess) -> dict[str | None, str]:
    """Events refused for good, by event id. An event that came before its client is held as
    a rejection waiting for it (waiting_for) and applied once the client exists: not one."""
    return {
        row.event_id: row.reason for row in worker.rows(RejectedEvent) if row.waiting_for is None
    }


def settle(worker: WorkerProcess) -> None:
    worker.wait_no_email_owed()
    worker.wait_idle()


def test_events_published_with_celery_node_are_applied_and_mailed(
    modules: Path, worker: WorkerProcess, smtp: SmtpSink
) -> None:
    add = payloads.client("N1", firstname="Grace", lastname="Hopper")
    contact = payloads.contact("NK1", "N1", "invoice")
    update = payloads.event("N1", companyname="Eckert-Mauchly", contract_version=CONTRACT_VERSION)
    # No queue given: celery-node's default, Celery's `celery` queue, which workers consume too.
    unrouted = payloads.contact("NK2", "N1", "support")
    before = time.time()
    ids = publish("celery-node-publish.js", modules, worker.broker_url, [
        {"task": "clients.add", "kwargs": add, "queue": "events"},
        {"task": "contacts.add", "kwargs": contact, "queue": "events", "stamp": True},
        {"task": "clients.update", "kwargs": update, "queue": "events", "protocol": 1},
        {"task": "contacts.add", "kwargs": unrouted},
    ])  # fmt: skip
    after = time.time()

    default, stamped, protocol_1 = queued(worker, "events")
    # celery-node's default: protocol 2 headers without root_id, retries or argsrepr, an
    # empty embed, the default exchange; the worker takes all of it as it is.
    assert {k: default.headers[k] for k in ("lang", "task", "id")} == {
        "lang": "js", "task": "clients.add", "id": ids[0],
    }  # fmt: skip
    assert (default.exchange, default.routing_key) == ("", "events")
    if default.envelope is not None:  # Redis: the transport's key for the message held
        assert isinstance(default.envelope["delivery_tag"], str)
    assert (default.content_type, default.content_encoding) == ("application/json", "utf-8")
    assert default.body == [[], add, {}]
    published_at = stamped.headers["clientflow_published_at"]
    assert before <= published_at <= after  # seconds since the epoch, not milliseconds
    assert "@" not in stamped.headers["kwargsrepr"]
    assert protocol_1.headers == {}
    assert protocol_1.body == {
        "task": "clients.update", "id": ids[2], "args": [], "kwargs": update,
    }  # fmt: skip
    assert [message.headers["id"] for message in queued(worker, "celery")] == [ids[3]]

    worker.start()
    worker.wait_applied(*(p["event_id"] for p in (add, contact, update, unrouted)))
    (welcome,) = smtp.wait_for(1)
    settle(worker)

    assert welcome.rcpt_tos == ["n1@example.com"]
    assert welcome.message["X-Clientflow-Event-Id"] == add["event_id"]
    text = welcome.message.get_body(("plain",))
    assert text is not None
    assert "Dear Grace Hopper," in text.get_content()
    assert len(smtp.messages) == 1
    with worker.sessions() as session:
        client = session.get(Client, "N1")
        assert client is not None
        assert (client.firstname, client.companyname) == ("Grace", "Eckert-Mauchly")
        contacts = {c.id: (c.client_id, c.invoice, c.support) for c in client.contacts}
    assert contacts == {"NK1": ("N1", True, False), "NK2": ("N1", False, True)}
    assert refusals(worker) == {}


def test_a_protocol_2_message_built_by_hand_in_node_is_applied_and_mailed(
    modules: Path, worker: WorkerProcess, smtp: SmtpSink
) -> None:
    add = payloads.client("R1", firstname="Katherine", lastname="Johnson")
    contact = payloads.contact("RK1", "R1", "general", contract_version=CONTRACT_VERSION)
    positional = payloads.client("R2")
    newer = payloads.client("R3", contract_version=CONTRACT_VERSION + 1)
    before = time.time()
    publish("raw-publish.js", modules, worker.broker_url, [
        {"task": "clients.add", "kwargs": add},
        {"task": "contacts.add", "kwargs": contact},
        {"task": "clients.add", "kwargs": positional, "args": ["R2"]},
        {"task": "clients.add", "kwargs": newer},
    ])  # fmt: skip
    after = time.time()

    waiting = queued(worker, "events")
    assert [m.headers["task"] for m in waiting] == ["clients.add", "contacts.add"] + [
        "clients.add"
    ] * 2
    assert all(before <= m.headers["clientflow_published_at"] <= after for m in waiting)
    assert waiting[0].body == [[], add, {"callbacks": None, "errbacks": None, "chain": None,
                                         "chord": None}]  # fmt: skip
    [events] = [q for q in read_queues(worker.app) if q.name == "events"]
    assert events.depth == 4
    if worker.vhost is None:
        # What `clientflow ops status` shows as the age of the oldest message (RabbitMQ
        # cannot show a message without handing it out: None there, docs/operations.md).
        assert events.oldest_published_at is not None
        assert before <= events.oldest_published_at <= after

    worker.start()
    worker.wait_applied(add["event_id"], contact["event_id"])
    (welcome,) = smtp.wait_for(1)
    settle(worker)

    assert refusals(worker) == {
        positional["event_id"]: (
            "positional arguments are not accepted: publish the event as keyword arguments"
        ),
        newer["event_id"]: (
            f"contract version {CONTRACT_VERSION + 1} is newer than this worker's "
            f"{CONTRACT_VERSION}: upgrade the workers before publishing version "
            f"{CONTRACT_VERSION + 1} events, then publish this one again"
        ),
    }
    assert welcome.rcpt_tos == ["r1@example.com"]
    assert str(welcome.message["To"]) == "Katherine Johnson <r1@example.com>"
    assert len(smtp.messages) == 1
    with worker.sessions() as session:
        assert session.get(Client, "R2") is None
        assert session.get(Client, "R3") is None
        stored = session.get(Contact, "RK1")
        assert stored is not None
        assert (stored.client_id, stored.general) == ("R1", True)
