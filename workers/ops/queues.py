"""Broker queues seen from outside: depth, age of the oldest message, messages held by workers.

Depth is asked through kombu (any transport). The age of the oldest message and the unacked
count need to know how the transport stores messages, so they are read for Redis and for the
embedded filesystem broker, and are None elsewhere. On RabbitMQ a passive declare gives the
depth (messages ready) of each queue and of the dead-letter queue; AMQP offers no way to see
the oldest message without taking it, nor the unacknowledged count, so both are None there
(not available) and the table says so.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqp.exceptions import NotFound
from celery import Celery
from kombu import Connection

from workers.broker.rabbitmq import DEAD_LETTER_QUEUE

# Celery's message protocol carries no publish time, so our publishers stamp one (see
# ops/hooks.py). Other publishers may send it too: epoch seconds as a number.
PUBLISHED_AT_HEADER = "clientflow_published_at"
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True)
class QueueReading:
    name: str
    # None: the queue does not exist (RabbitMQ, before any worker declared it).
    depth: int | None
    oldest_published_at: float | None
    unacked: int | None


def read_queues(app: Celery) -> list[QueueReading]:
    """One reading per queue the app declares; raises when the broker does not answer."""
    names = sorted(app.amqp.queues)
    with app.connection_for_read(connect_timeout=CONNECT_TIMEOUT) as connection:
        connection.ensure_connection(max_retries=1)
        if connection.transport.driver_type == "amqp":
            return _amqp_readings(connection, [*names, DEAD_LETTER_QUEUE])
        channel: Any = connection.default_channel  # kombu's virtual channel, untyped
        # A (non-passive) declare of our own queues changes nothing and, unlike a passive one,
        # does not fail on Redis for a queue that is empty and so has no key.
        depths = {name: int(channel.queue_declare(name).message_count) for name in names}
        transport = connection.transport.driver_type
        if transport == "redis":
            oldest = {name: _redis_oldest(channel, name) for name in names}
            unacked: dict[str, int] | None = _redis_unacked(app, channel)
        elif transport == "filesystem":
            folder = Path(app.conf.broker_transport_options["data_folder_in"])
            oldest = {name: _file_oldest(folder, name) for name in names}
            unacked = None
        else:
            oldest, unacked = {}, None
    return [
        QueueReading(
            name=name,
            depth=depths[name],
            oldest_published_at=oldest.get(name),
            unacked=None if unacked is None else unacked.get(name, 0),
        )
        for name in names
    ]


def _amqp_readings(connection: Connection, names: list[str]) -> list[QueueReading]:
    readings = []
    for name in names:
        # A channel per queue: a passive declare of a missing queue closes its channel. A
        # plain declare would do worse: with other arguments than the workers' it is refused,
        # and with none it would create the queue as a classic one.
        channel: Any = connection.channel()
        try:
            depth: int | None = int(channel.queue_declare(name, passive=True).message_count)
        except NotFound:
            depth = None
        finally:
            channel.close()
        readings.append(QueueReading(name, depth, oldest_published_at=None, unacked=None))
    return readings


def age_seconds(published_at: float | None, now: float | None = None) -> float | None:
    if published_at is None:
        return None
    # Clocks of publisher and reader differ a little; a negative age would only confuse.
    return max(0.0, (time.time() if now is None else now) - published_at)


def _redis_oldest(channel: Any, queue: str) -> float | None:
    # kombu LPUSHes and workers BRPOP, so the oldest message is the last element; with
    # priorities each level is its own list, and the oldest of their tails is the oldest.
    keys = dict.fromkeys(channel._q_for_pri(queue, step) for step in channel.priority_steps)
    stamps = [_published_at(channel.client.lindex(key, -1)) for key in keys]
    known = [stamp for stamp in stamps if stamp is not None]
    return min(known) if known else None


def _published_at(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)["headers"][PUBLISHED_AT_HEADER]
        return float(value)
    except (ValueError, KeyError, TypeError):
        return None


def _redis_unacked(app: Celery, channel: Any) -> dict[str, int]:
    # The transport keeps every delivered, unacknowledged message in one hash as
    # [message, exchange, routing_key] until it is acked (or restored after a worker died).
    queue_for_key = {queue.routing_key: name for name, queue in app.amqp.queues.items()}
    counts: Counter[str] = Counter()
    for raw in channel.client.hvals(channel.unacked_key):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        counts[queue_for_key.get(routing_key, str(routing_key))] += 1
    return dict(counts)


def _file_oldest(folder: Path, queue: str) -> float | None:
    # The filesystem transport names files "<monotonic ms>_<uuid>.<queue>.msg": not wall
    # time, so the age comes from the file's modification time.
    suffix = f".{queue}.msg"
    times = []
    for path in folder.glob(f"*{suffix}"):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue  # taken by a worker meanwhile
    return min(times) if times else None
