"""Raw broker messages, built by hand as a careless or hostile publisher could send them."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from kombu import Connection


def kombu_envelope(
    body: bytes,
    headers: dict[str, Any],
    *,
    properties: dict[str, Any] | None = None,
    queue: str = "events",
) -> bytes:
    """A kombu envelope as the Redis transport stores it in a queue list, around any body."""
    props = {
        "delivery_tag": str(uuid.uuid4()),
        "body_encoding": "base64",
        "delivery_info": {"exchange": queue, "routing_key": queue},
    }
    if properties is not None:
        props = properties
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": props,
        }
    ).encode()


def task_headers(task: str, task_id: str | None = None) -> dict[str, Any]:
    """Celery protocol 2 headers naming `task`, as send_task writes them."""
    task_id = task_id or str(uuid.uuid4())
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}


def nested(depth: int) -> Any:
    """A JSON value `depth` arrays deep, built without recursion."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def amqp_publish(
    url: str,
    body: bytes,
    headers: dict[str, Any],
    *,
    content_type: str = "application/json",
    queue: str = "events",
) -> None:
    """Any body and headers as one AMQP message on the default exchange, routed to `queue`,
    confirmed by the broker: what a publisher without Celery (or a broken one) sends."""
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        connection.Producer().publish(
            body,
            exchange="",
            routing_key=queue,
            headers=headers,
            content_type=content_type,
            content_encoding="utf-8",
        )
