"""The Redis channel's reliable fetch: a popped message is never only in a dead worker's socket.

kombu's own channel BRPOPs a message and records it as unacknowledged in a second step; a
worker killed between the two lost it. These tests stop a consumer at exactly that point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import payloads
import pytest
import redis
from celery import Celery
from kombu import Consumer
from kombu.asynchronous.hub import Hub, set_event_loop
from kombu.transport import redis as kombu_redis
from servers import RedisServer

from models.settings import Settings
from workers.app import create_app
from workers.broker import redis_transport

VISIBILITY_TIMEOUT = 1


RESTORE_LOCK_SECONDS = 2


def make_broker(reliable: bool) -> Iterator[tuple[RedisServer, Celery, redis.Redis]]:
    with RedisServer() as server:
        settings = Settings(
            broker_url=server.url,
            retry_backoff_max=0.5,
            redis_visibility_timeout=VISIBILITY_TIMEOUT,
            email_redeliver_after_seconds=5,
            redis_reliable_fetch=reliable,
            redis_restore_lock_seconds=RESTORE_LOCK_SECONDS,
        )
        app = create_app(settings)
        client = redis.Redis.from_url(server.url)
        yield server, app, client
        client.close()
        app.close()


@pytest.fixture
def broker() -> Iterator[tuple[RedisServer, Celery, redis.Redis]]:
    yield from make_broker(reliable=True)


@pytest.fixture
def kombu_fetch_broker() -> Iterator[tuple[RedisServer, Celery, redis.Redis]]:
    yield from make_broker(reliable=False)


def pop_and_die(app: Celery) -> None:
    """A consumer asks for a message and dies before it reads the reply."""
    with app.connection_for_read() as connection:
        channel: Any = connection.channel()
        consumer = Consumer(channel, queues=[app.amqp.queues["events"]], accept=["json"])
        consumer.consume()
        transport: Any = connection.transport
        transport.cycle._register_BRPOP(channel)  # sends the pop, as the event loop does
        time.sleep(0.2)  # the server has answered; nobody reads it
        channel.client.connection.disconnect()  # as the kernel does for a killed process


def test_a_message_popped_by_a_consumer_that_dies_stays_recorded(
    broker: tuple[RedisServer, Celery, redis.Redis],
) -> None:
    _, app, client = broker
    app.send_task("clients.add", kwargs=payloads.client("R1"))
    assert client.llen("events") == 1

    pop_and_die(app)

    assert client.llen("events") == 0
    assert client.hlen("unacked") == 1
    assert client.zcard("unacked_index") == 1


def test_turned_off_it_is_kombus_brpop_which_loses_that_message(
    kombu_fetch_broker: tuple[RedisServer, Celery, redis.Redis],
) -> None:
    # What CLIENTFLOW_REDIS_RELIABLE_FETCH=false (for Redis before 6.2) gives up.
    _, app, client = kombu_fetch_broker
    app.send_task("clients.add", kwargs=payloads.client("R0"))

    pop_and_die(app)

    assert (client.llen("events"), client.hlen("unacked")) == (0, 0)


def test_after_the_visibility_timeout_the_message_goes_back_to_its_queue(
    broker: tuple[RedisServer, Celery, redis.Redis],
) -> None:
    _, app, client = broker
    payload = payloads.client("R2")
    app.send_task("clients.add", kwargs=payload)
    pop_and_die(app)
    time.sleep(VISIBILITY_TIMEOUT + 0.2)

    assert take_restored(app) == [payload]
    assert client.hlen("unacked") == 0
    assert client.llen("events") == 0


def test_a_restore_lock_left_by_a_cut_off_scan_holds_the_sweep_only_so_long(
    broker: tuple[RedisServer, Celery, redis.Redis],
) -> None:
    # A sweep takes kombu's lock `unacked_mutex` (SET NX with an expiry) while it scans. When
    # Redis stops mid-scan the lock is persisted and never released, and every worker's sweep
    # skips until it expires. With kombu's 300 s, a message the worker held when Redis stopped
    # waits five minutes: the likeliest cause of the Redis restart fault test's one failure
    # that left a message unacknowledged for all of its 180 s.
    _, app, client = broker
    payload = payloads.client("R3")
    app.send_task("clients.add", kwargs=payload)
    pop_and_die(app)
    with app.connection_for_read() as connection:
        channel: Any = connection.channel()
        qos = channel.qos
        assert qos.unacked_mutex_expire == RESTORE_LOCK_SECONDS  # the setting reaches kombu
        client.set(qos.unacked_mutex_key, "a scan cut off", ex=qos.unacked_mutex_expire)
    time.sleep(VISIBILITY_TIMEOUT + 0.2)

    with app.connection_for_read() as connection:
        channel = connection.channel()
        channel.qos.restore_visible()
    assert (client.llen("events"), client.hlen("unacked")) == (0, 1)  # the lock held it

    time.sleep(RESTORE_LOCK_SECONDS)
    assert take_restored(app) == [payload]


def take_restored(app: Celery) -> list[Any]:
    """Run one sweep as any live worker does, then take what it put back on `events`."""

    with app.connection_for_read() as connection:
        channel: Any = connection.channel()
        channel.qos.restore_visible()
        received: list[Any] = []

        def take(body: Any, message: Any) -> None:
            received.append(body[1])  # (args, kwargs, embed)
            message.ack()

        consumer = Consumer(
            channel, queues=[app.amqp.queues["events"]], accept=["json"], callbacks=[take]
        )
        with consumer:
            connection.drain_events(timeout=5)
    return received


def test_an_idle_consumer_takes_a_message_from_any_of_its_queues(
    broker: tuple[RedisServer, Celery, redis.Redis],
) -> None:
    _, app, client = broker
    names = ["events", "emails", "celery"]
    received: list[str] = []

    def take(body: Any, message: Any) -> None:
        received.append(message.delivery_info["routing_key"])
        message.ack()

    with app.connection_for_read() as connection:
        channel: Any = connection.channel()
        consumer = Consumer(
            channel,
            queues=[app.amqp.queues[name] for name in names],
            accept=["json"],
            callbacks=[take],
        )
        with consumer:
            for name in names:
                # Let the channel go idle (waiting on one queue), then publish to each.
                with pytest.raises(TimeoutError):
                    connection.drain_events(timeout=0.5)
                app.send_task("outbox.relay", queue=name)
                connection.drain_events(timeout=5)
    assert received == names
    assert client.hlen("unacked") == 0


def test_closing_a_torn_down_channel_leaves_its_messages_for_the_sweep(
    broker: tuple[RedisServer, Celery, redis.Redis],
) -> None:
    """Celery closes its connection when Redis goes away; that close must not stop the worker.

    kombu had already detached the transport (client None) when the channel tried to put its
    unacknowledged messages back: AttributeError, "Unrecoverable error", a dead worker.
    """
    _, app, client = broker
    app.send_task("clients.add", kwargs=payloads.client("R3"))
    connection = app.connection_for_read()
    channel: Any = connection.channel()
    held: list[Any] = []
    consumer = Consumer(
        channel,
        queues=[app.amqp.queues["events"]],
        accept=["json"],
        callbacks=[lambda body, message: held.append(message)],
    )
    consumer.consume()
    connection.drain_events(timeout=5)
    assert len(held) == 1  # delivered, not acknowledged
    channel.connection.client = None  # what kombu's connection close had done first

    channel.close()  # kombu's own QoS raised AttributeError here
    # The task it was for finishes afterwards and acknowledges it: kombu raised
    # AttributeError from the detached transport, past ack_log_error, into the event loop.
    held[0].ack_log_error(logging.getLogger(__name__), channel.connection_errors)

    assert client.hlen("unacked") == 1
    assert client.llen("events") == 0
    time.sleep(VISIBILITY_TIMEOUT + 0.2)
    with app.connection_for_read() as fresh:
        sweeper: Any = fresh.channel()
        sweeper.qos.restore_visible()
    assert client.llen("events") == 1
    assert client.hlen("unacked") == 0


def test_the_channel_refuses_a_kombu_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_transport.check_kombu()  # the installed one passes
    with pytest.raises(SystemExit) as outside:
        redis_transport.check_kombu("5.8.0")
    assert str(outside.value) == (
        "clientflow: kombu 5.8.0 is outside the tested range; the Redis channel needs "
        "kombu>=5.7,<5.8 (pip install -c constraints.txt -e .)"
    )
    monkeypatch.delattr(kombu_redis.Channel, "_flush_brpop_reauth")
    with pytest.raises(SystemExit) as lacking:
        redis_transport.check_kombu()
    assert "lacks Channel._flush_brpop_reauth" in str(lacking.value)


def test_acknowledgements_share_one_client_per_connection_pool(
    broker: tuple[RedisServer, Celery, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu built a redis.Redis for every ack; the channel makes one per pool and keeps it."""
    _, app, client = broker
    made: list[Any] = []
    construct = redis.Redis.__init__

    def counted(self: redis.Redis, *args: Any, **kwargs: Any) -> None:
        made.append(kwargs.get("connection_pool"))
        construct(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counted)
    for number in range(5):
        app.send_task("clients.add", kwargs=payloads.client(f"S{number}"))
    with app.connection_for_read() as connection:
        channel: Any = connection.channel()
        acked: list[str] = []

        def take(body: Any, message: Any) -> None:
            message.ack()
            acked.append(message.delivery_tag)

        with Consumer(channel, [app.amqp.queues["events"]], accept=["json"], callbacks=[take]):
            while len(acked) < 5:
                connection.drain_events(timeout=5)
        synchronous = [pool for pool in made if pool is channel.pool]
        assert len(synchronous) == 1  # five acks, one client
        assert client.hlen("unacked") == 0
        assert client.zcard("unacked_index") == 0

        # A new pool (kombu makes one after a reconnect) gets a client of its own.
        old = channel._create_client()
        channel._pool = None
        fresh = channel._create_client()
        assert fresh is not old
        assert fresh.connection_pool is channel.pool is not old.connection_pool
        assert channel._create_client() is fresh


@pytest.fixture
def pops_and_waits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pops (the script, sent whole or by its SHA1) and the waits (BLMOVE) that consumers
    send, in order; kombu's own scripts (the sweep's lock) are left out."""
    sent: list[str] = []
    send = redis.connection.AbstractConnection.send_command
    pop = {redis_transport.POP_AND_RECORD, redis_transport.POP_AND_RECORD_SHA}

    def recorded(self: Any, *args: Any, **kwargs: Any) -> None:
        if args[0] == "BLMOVE" or (args[0] in ("EVAL", "EVALSHA") and args[1] in pop):
            sent.append(args[0])
        send(self, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_command", recorded)
    return sent


@contextmanager
def taking_events(app: Celery, taken: list[str]) -> Iterator[Any]:
    """A connection consuming the events queue: each message acknowledged, its client id
    appended to `taken`, as connection.drain_events delivers it."""
    with app.connection_for_read() as connection:
        channel: Any = connection.channel()

        def take(body: Any, message: Any) -> None:
            message.ack()
            taken.append(body[1]["client_id"])

        with Consumer(channel, [app.amqp.queues["events"]], accept=["json"], callbacks=[take]):
            yield connection


def test_the_pop_that_takes_the_last_message_is_followed_by_a_wait_not_another_pop(
    broker: tuple[RedisServer, Celery, redis.Redis], pops_and_waits: list[str]
) -> None:
    """Events that come one at a time cost a pop and a wait each: the script says it took
    the last message, so the channel does not pop again only to find the queues empty."""
    _, app, _ = broker
    for number in range(2):
        app.send_task("clients.add", kwargs=payloads.client(f"P{number}"))
    taken: list[str] = []
    with taking_events(app, taken) as connection:
        connection.drain_events(timeout=5)
        connection.drain_events(timeout=5)
        assert sorted(taken) == ["P0", "P1"]
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.05)  # shorter than one wait
    assert pops_and_waits == ["EVAL", "EVALSHA", "BLMOVE"]


def test_a_redis_that_lost_the_pop_script_gets_it_again(
    broker: tuple[RedisServer, Celery, redis.Redis], pops_and_waits: list[str]
) -> None:
    """The script goes by its SHA1 once Redis has it; a Redis restarted since (its script
    cache empty, as SCRIPT FLUSH leaves it) answers NOSCRIPT, and the channel sends it whole."""
    _, app, client = broker
    taken: list[str] = []
    with taking_events(app, taken) as connection:
        for number in range(3):
            app.send_task("clients.add", kwargs=payloads.client(f"N{number}"))
            deadline = time.monotonic() + 5
            while len(taken) <= number and time.monotonic() < deadline:
                with suppress(TimeoutError):
                    connection.drain_events(timeout=1)
            if number == 0:
                client.script_flush()
    assert taken == ["N0", "N1", "N2"]
    pops = [command for command in pops_and_waits if command != "BLMOVE"]
    # Whole at first, by SHA1 until the flush, answered NOSCRIPT once, whole again, by SHA1.
    assert pops[0] == "EVAL"
    assert pops.count("EVAL") == 2
    assert pops[-1] == "EVALSHA"
    stats: dict[str, Any] = client.info("commandstats")
    assert stats["cmdstat_evalsha"]["failed_calls"] >= 1  # the NOSCRIPT
    assert client.hlen("unacked") == 0


def test_the_acknowledgements_of_one_turn_of_the_event_loop_go_to_redis_together(
    broker: tuple[RedisServer, Celery, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's event loop runs the acknowledgements of the tasks that finished (a batch
    of events) one after another in one turn: their entries leave the unacked hash in one
    round trip at the turn's end, not one each."""
    _, app, client = broker
    for number in range(5):
        app.send_task("clients.add", kwargs=payloads.client(f"T{number}"))
    with app.connection_for_read() as connection:
        channel: Any = connection.channel()
        messages: list[Any] = []
        with Consumer(
            channel,
            [app.amqp.queues["events"]],
            accept=["json"],
            callbacks=[lambda body, message: messages.append(message)],
        ):
            while len(messages) < 5:
                connection.drain_events(timeout=5)
        assert client.hlen("unacked") == 5

        executed: list[int] = []
        execute = redis.client.Pipeline.execute

        def counted(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
            executed.append(len(self.command_stack))
            return execute(self, *args, **kwargs)

        monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
        hub = Hub()
        previous = set_event_loop(hub)
        try:
            for message in messages:
                hub.call_soon(message.ack)  # as Celery's consumer schedules them
            next(hub.create_loop())  # one turn
        finally:
            set_event_loop(previous)
            hub.close()
    assert executed == [2]  # one MULTI ... EXEC: the index and the hash, all five tags
    assert client.hlen("unacked") == 0
    assert client.zcard("unacked_index") == 0
    qos = channel.qos
    qos._flush()  # kombu's own books agree (it clears acknowledged tags lazily)
    assert not qos._delivered
