"""The bad input of the fault suite: each kind of message that once stalled, crashed or
silenced a worker, as Hypothesis strategies, and how to publish each.

Every case here must end as exactly one rejected_events row with a reason, whatever layer
refuses it: the Redis channel (not a kombu envelope), the consumer (not a task message, too
deep), the contract (invalid values) or a handler (a template that cannot render it).

What is not a Celery message goes straight into the queue, below Celery: a Redis list entry
(RedisQueue), or an AMQP message with any body and headers (AmqpQueue).
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any, Protocol

import payloads
import redis
from celery import Celery
from hypothesis import strategies as st
from kombu import Connection
from wire import kombu_envelope, nested, task_headers

# The client every fuzzed notification and invoice names; the test adds it first, so those
# events get as far as their handler (rendering) instead of waiting for their client.
HOLDER = "H1"

REQUIRED = ("firstname", "lastname", "email", "address1", "city", "state", "postcode",
            "country", "phonenumber")  # fmt: skip
NAME_FIELDS = ("firstname", "lastname", "city", "companyname")
# Every character that breaks a header line or is a control: C0, DEL, C1, U+2028, U+2029.
BREAKING = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]]
# Fields whose text reaches an email header: the To name, the subject, the invoice number.
HEADER_FIELDS = ("firstname", "lastname", "companyname", "title", "number")
# Celery protocol 2 headers a worker reads before the task runs.
CELERY_HEADERS = ("id", "eta", "expires", "retries", "timelimit", "argsrepr", "kwargsrepr",
                  "root_id", "parent_id", "group", "shadow", "ignore_result", "origin")  # fmt: skip

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def corrupted_client() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """A clients.add payload with exactly one thing wrong (so it can never be valid)."""

    def wrong_type(field: str, value: Any) -> tuple[str, dict[str, Any]]:
        return "wrong type", {**payloads.client("B1"), field: value}

    def missing(field: str) -> tuple[str, dict[str, Any]]:
        payload = payloads.client("B1")
        del payload[field]
        return "missing", payload

    def huge(field: str, size: int) -> tuple[str, dict[str, Any]]:
        return "huge", {**payloads.client("B1"), field: "x" * size}

    def crlf(field: str, before: str, after: str) -> tuple[str, dict[str, Any]]:
        # Letters on both sides: a CR/LF at the edge is stripped as whitespace, which is valid.
        return "CR/LF", {**payloads.client("B1"), field: f"A{before}\r\n{after}Z"}

    def extra(name: str, value: Any) -> tuple[str, dict[str, Any]]:
        return "unknown field", {**payloads.client("B1"), f"x_{name}": value}

    def surrogate(field: str) -> tuple[str, dict[str, Any]]:
        return "lone surrogate", {**payloads.client("B1"), field: "Ada\udcff"}

    def over_long_id(size: int) -> tuple[str, dict[str, Any]]:
        return "id over its limit", {**payloads.client("B1" + "x" * size)}

    scalars = st.integers() | st.floats(allow_nan=False) | st.booleans() | st.lists(st.integers())
    names = st.sampled_from(NAME_FIELDS[:3])
    return st.one_of(
        st.builds(wrong_type, st.sampled_from(REQUIRED), scalars),
        st.builds(missing, st.sampled_from(REQUIRED)),
        st.builds(huge, names, st.integers(min_value=101, max_value=300_000)),
        st.builds(crlf, names, st.text(max_size=20), st.text(max_size=20)),
        st.builds(extra, st.from_regex(r"[a-z]{1,12}", fullmatch=True), scalars),
        st.builds(surrogate, names),
        st.builds(over_long_id, st.integers(min_value=63, max_value=200)),
    )


def breaking_character() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """One header-breaking character inside a value that reaches a header."""

    def place(field: str, char: str) -> tuple[str, dict[str, Any]]:
        value = f"Hello{char}Bcc: x@example.org"
        if field == "title":
            context = {"title": value, "message": "m"}
            return "notifications.send", payloads.notification(HOLDER, context=context)
        if field == "number":
            return "invoices.upsert", payloads.invoice(f"N-{uuid.uuid4().hex[:8]}", HOLDER,
                                                       number=value)  # fmt: skip
        return "clients.add", payloads.client("B1", **{field: value})

    return st.builds(place, st.sampled_from(HEADER_FIELDS), st.sampled_from(BREAKING))


def extreme_date() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    early = st.dates(max_value=date(1969, 12, 31))
    late = st.dates(min_value=date(2200, 1, 1))

    def place(field: str, day: date) -> tuple[str, dict[str, Any]]:
        iso = day.isoformat()
        invoice_id = f"D-{uuid.uuid4().hex[:8]}"
        if field == "next_due_date":
            return "services.upsert", payloads.service("S1", HOLDER, next_due_date=iso)
        if field == "payment":
            return "invoices.record_payment", payloads.payment("D-1", "1.00", HOLDER, date=iso)
        dates = {"date": iso, "due_date": iso} if field == "both" else {"due_date": iso}
        return "invoices.upsert", payloads.invoice(invoice_id, HOLDER, **dates)

    fields = st.sampled_from(["due_date", "both", "next_due_date", "payment"])
    return st.builds(place, fields, early | late)


def wire_body() -> st.SearchStrategy[bytes]:
    """A body under valid task headers that is not [args, kwargs, embed] of a valid event."""
    shapes = json_values | st.tuples(json_values, json_values, json_values).map(list)
    return shapes.map(lambda body: json.dumps(body).encode())


def wire_headers() -> st.SearchStrategy[dict[str, Any]]:
    """Valid task headers with one of Celery's own headers replaced by arbitrary JSON."""

    def spoil(name: str, value: Any) -> dict[str, Any]:
        headers = task_headers("clients.add")
        if value is None and name == "id":
            del headers["id"]
        else:
            headers[name] = value
        return headers

    # Text values only where a date parser will not take them: an ETA years ahead would
    # be a valid, held message, not bad input.
    # No two-number lists: as `timelimit` that is a real time limit, not bad input.
    values = st.none() | st.integers() | st.just("soon") | st.lists(
        st.integers(), min_size=3, max_size=3
    )
    return st.builds(spoil, st.sampled_from(CELERY_HEADERS), values)


def wire_properties() -> st.SearchStrategy[dict[str, Any]]:
    """The envelope's properties with one of them removed or replaced by arbitrary JSON."""

    def spoil(name: str, value: Any, drop: bool) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": "base64",
            "delivery_info": {"exchange": "events", "routing_key": "events"},
        }
        if drop:
            properties.pop(name, None)
        else:
            properties[name] = value
        return properties

    names = st.sampled_from(["delivery_tag", "body_encoding", "delivery_info"])
    return st.builds(spoil, names, json_values.filter(lambda v: not isinstance(v, str)),
                     st.booleans())  # fmt: skip


def bad_messages() -> st.SearchStrategy[tuple[str, Any]]:
    """(kind, what to publish): each must end as exactly one rejected_events row."""
    return st.one_of(
        st.tuples(st.just("payload"), corrupted_client()),
        st.tuples(st.just("unknown task"), st.from_regex(r"bogus\.[a-z_]{1,20}", fullmatch=True)),
        st.tuples(st.just("positional"), st.lists(st.integers(), min_size=1, max_size=3)),
        st.tuples(st.just("raw bytes"), st.binary(max_size=200)),
        st.tuples(st.just("raw text"), st.text(max_size=200)),
        st.tuples(st.just("undecodable body"), st.binary(min_size=1, max_size=200)),
        st.tuples(st.just("no task header"), st.binary(max_size=50)),
        st.tuples(st.just("header-breaking character"), breaking_character()),
        st.tuples(st.just("extreme date"), extreme_date()),
        st.tuples(st.just("wire body"), wire_body()),
        st.tuples(st.just("wire headers"), wire_headers()),
        st.tuples(st.just("wire properties"), wire_properties()),
        st.tuples(st.just("deep context"), st.integers(min_value=17, max_value=800)),
        st.tuples(st.just("deep entry"), st.integers(min_value=1000, max_value=20_000)),
    )


class RawQueue(Protocol):
    """The `events` queue, written to below Celery."""

    def entry(self, raw: bytes) -> None:
        """Something that is not a message at all."""

    def message(
        self, body: bytes, headers: dict[str, Any], properties: dict[str, Any] | None = None
    ) -> None:
        """A message with any body and headers; `properties`, the transport's own, spoilt."""


class RedisQueue:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def entry(self, raw: bytes) -> None:
        self.client.lpush("events", raw)

    def message(
        self, body: bytes, headers: dict[str, Any], properties: dict[str, Any] | None = None
    ) -> None:
        self.client.lpush("events", kombu_envelope(body, headers, properties=properties))


INT64 = (-(2**63), 2**63 - 1)


def amqp_carriable(value: Any) -> Any:
    """A header value as an AMQP field table can carry it: integers are 64-bit on the wire, so
    a larger one (hypothesis finds 2**63) cannot be published at all; it is clamped, and stays
    an integer where a string was due."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return max(INT64[0], min(INT64[1], value))
    if isinstance(value, list):
        return [amqp_carriable(item) for item in value]
    if isinstance(value, dict):
        return {key: amqp_carriable(item) for key, item in value.items()}
    return value


class AmqpQueue:
    """The default exchange, routing key `events`, publisher confirms, one connection."""

    def __init__(self, url: str) -> None:
        self.connection = Connection(url, transport_options={"confirm_publish": True})
        self.producer = self.connection.Producer()

    def entry(self, raw: bytes) -> None:
        self._publish(raw, {}, "application/json")

    def message(
        self, body: bytes, headers: dict[str, Any], properties: dict[str, Any] | None = None
    ) -> None:
        # An AMQP message's properties are the broker's (no delivery tag or info to spoil);
        # what a publisher can spoil is its content type: one the worker must not decode.
        if properties is None:
            self._publish(body, headers, "application/json", "utf-8")
        else:
            self._publish(body, headers, "application/x-python-serialize", "binary")

    def _publish(
        self, body: bytes, headers: dict[str, Any], content_type: str, encoding: str = "utf-8"
    ) -> None:
        self.producer.publish(
            body,
            exchange="",
            routing_key="events",
            headers=amqp_carriable(headers),
            content_type=content_type,
            content_encoding=encoding,
        )

    def close(self) -> None:
        self.connection.release()


def publish_bad(app: Celery, raw: RawQueue, kind: str, content: Any) -> str:
    """Publish one case; returns the label it is counted under."""
    if kind in ("payload", "header-breaking character", "extreme date"):
        label, payload = content
        task = "clients.add" if kind == "payload" else label
        app.send_task(task, kwargs={**payload, "event_id": payloads.event_id()})
        return kind if kind != "payload" else label
    if kind == "unknown task":
        app.send_task(content, kwargs={"event_id": payloads.event_id()})
    elif kind == "positional":
        app.send_task("clients.update", args=content)
    elif kind in ("raw bytes", "raw text"):
        raw.entry(content if isinstance(content, bytes) else content.encode())
    elif kind == "undecodable body":
        raw.message(b"\xff" + content, task_headers("clients.add"))
    elif kind == "no task header":
        raw.message(content, {"id": "no-task"})
    elif kind == "wire body":
        raw.message(content, task_headers("clients.add"))
    elif kind == "wire headers":
        body = json.dumps([[], payloads.client("B1", email="not an address"), {}]).encode()
        raw.message(body, content)
    elif kind == "wire properties":
        body = json.dumps([[], payloads.client("B1", email="not an address"), {}]).encode()
        raw.message(body, task_headers("clients.add"), properties=content)
    elif kind == "deep context":
        context = {"title": "t", "message": "m", "deep": nested(content)}
        app.send_task("notifications.send", kwargs=payloads.notification(HOLDER, context=context))
    elif kind == "deep entry":
        raw.entry(b"[" * content + b"]" * content)
    else:
        raise AssertionError(f"unknown kind {kind}")
    return kind
