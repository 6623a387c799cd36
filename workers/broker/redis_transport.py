"""kombu's Redis transport, made to lose no message to a killed worker and no worker to a bad entry.

Reliable fetch. kombu takes a message with BRPOP and only then, in a second round trip, records
it as unacknowledged (the `unacked` hash that lets Redis hand a dead worker's messages to
another). A worker killed in between loses the message for good (kombu#305; the fault suite's
kill -9 test lost a clients.add this way), and the gap is not small: kombu leaves a BRPOP
reply unread in the socket while the worker is busy. Here one Lua script pops the message and
records it in the same atomic step. Scripts cannot block, so when every queue is empty the
channel waits with `BLMOVE q q RIGHT RIGHT`, which blocks until `q` has a message and then
leaves the list as it was (Redis >= 6.2), with a short timeout, on the queue that last had a
message (the busy one, the events queue in practice), the others in turn until one has. The
script also says whether it left any message behind: when it took the last one, the channel
waits next instead of asking the script again only to hear that every queue is empty (events
that come one at a time cost two commands each, not three). It is sent by its SHA1 (EVALSHA),
and in full (EVAL, which caches it) when Redis does not know it: at the start, after a restart.

Foreign entries. Anything can LPUSH into a Redis list. kombu pops the entry and parses it
inside the consumer loop; an entry that is not a JSON envelope raises there and Celery stops
the worker with "Unrecoverable error". This channel records such an entry as a rejected event
and carries on.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import threading
import time
from importlib import metadata
from queue import Empty
from typing import Any

from kombu.asynchronous.hub import Hub, get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import NoScriptError

from workers.broker.consumer import record_foreign_entry

log = logging.getLogger(__name__)

# What parsing a foreign entry raises: not JSON or not UTF-8 (ValueError, UnicodeDecodeError),
# JSON of the wrong shape (TypeError, KeyError, AttributeError), a body that is not base64,
# JSON nested deeper than the decoder's recursion allows (RecursionError).
MALFORMED = (ValueError, TypeError, KeyError, AttributeError, binascii.Error, RecursionError)


class ForeignEntry(ValueError):
    """A JSON entry that is not a kombu envelope; carries the entry for the record."""

    def __init__(self, entry: Any, problem: str) -> None:
        super().__init__(problem)
        self.entry = entry


class CheckedMessage(virtual.Message):
    # The envelope is checked before kombu reads it: kombu's KeyError for a missing field
    # would otherwise be taken for a lost connection (KeyError is among its connection
    # errors) and the entry dropped without a trace.
    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
            raise ForeignEntry(payload, "not a kombu envelope (no 'properties' object)")
        info = payload["properties"].get("delivery_info")
        if not isinstance(info, dict) or not {"exchange", "routing_key"} <= info.keys():
            # kombu's QoS reads both when it records the message, after this check, and its
            # KeyError there would pass for a lost connection: the entry would vanish.
            raise ForeignEntry(
                payload, "not a kombu envelope (no 'delivery_info' with exchange and routing_key)"
            )
        if not isinstance(payload["properties"].get("delivery_tag"), str):
            raise ForeignEntry(payload, "not a kombu envelope (no 'delivery_tag' string)")
        try:
            super().__init__(payload, channel, **kwargs)
        except MALFORMED as exc:
            raise ForeignEntry(payload, f"{type(exc).__name__}: {exc}") from exc


def _raw_entry(exc: BaseException) -> str:
    if isinstance(exc, ForeignEntry):
        if isinstance(exc.entry, str):
            return exc.entry  # never parsed: kept as it was in the queue
        return json.dumps(exc.entry, ensure_ascii=True, default=repr)
    raw: Any = getattr(exc, "doc", None) or getattr(exc, "object", None)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    return str(raw) if raw is not None else "(not available once parsed)"


# KEYS: the queue lists in the order to take them, then the unacked hash and its index.
# ARGV[1]: the time to index the message under (the client's clock, as kombu's own entries).
# Writes the hash entry exactly as kombu's QoS.append does, so kombu's ack and restore work
# on it unchanged, and returns the tag it recorded the entry under (the consumer's QoS then
# skips kombu's second write of it). An entry that is not a kombu envelope is popped and
# returned unrecorded, for the caller to record as a foreign entry (a script error would leave
# the pop done). The third element is 1 when a message is left in this or a later queue (the
# earlier ones were empty), else 0.
POP_AND_RECORD = """
local queues = #KEYS - 2
local unacked, index = KEYS[queues + 1], KEYS[queues + 2]
for i = 1, queues do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local more = 0
    for j = i, queues do
      if redis.call('LLEN', KEYS[j]) > 0 then
        more = 1
        break
      end
    end
    local ok, message = pcall(cjson.decode, item)
    if ok and type(message) == 'table' and type(message.properties) == 'table' then
      local properties = message.properties
      local info, tag = properties.delivery_info, properties.delivery_tag
      if type(info) == 'table' and type(tag) == 'string' then
        redis.call('ZADD', index, ARGV[1], tag)
        redis.call('HSET', unacked, tag, '[' .. item .. ',' .. cjson.encode(info.exchange)
          .. ',' .. cjson.encode(info.routing_key) .. ']')
        return {KEYS[i], item, more, tag}
      end
    end
    return {KEYS[i], item, more}
  end
end
return false
"""
POP_AND_RECORD_SHA = hashlib.sha1(POP_AND_RECORD.encode()).hexdigest()

# How long one wait on an empty queue lasts before the channel pops from all queues again:
# the longest a message on another queue waits while the worker is idle. Idle, a consumer
# sends about two commands per wait.
WAIT_SECONDS = 0.1


def _loop_running_here() -> Hub | None:
    """The worker's event loop, when this is its thread running it."""
    hub = get_event_loop()
    if hub is None or getattr(hub, "_loop_thread", None) != threading.get_ident():
        return None
    return hub


class QoS(kombu_redis.QoS):
    """Survives being asked to put messages back when the connection is already gone.

    When Redis goes away, Celery closes its broker connection, and closing the channel puts
    the worker's unacknowledged messages back on their queues. Redis is down then, or (as the
    fault suite's Redis restart test found) kombu has already detached the transport from its
    connection, and building a Redis client raises AttributeError. kombu lets that escape,
    Celery calls it an "Unrecoverable error" and the worker stops for good. The messages are
    still in the unacked hash: any worker's periodic sweep puts them back after the visibility
    timeout, so here they are left to it.
    """

    def append(self, message: Any, delivery_tag: str) -> None:
        """Track a delivered message. One the pop script took is in the unacked hash already
        (written as kombu writes it); kombu's append would write it a second time, a Redis
        round trip per message in the consumer's loop, a sixth of its time in a profile."""
        channel: Any = self.channel
        if channel.recorded_tag == delivery_tag:
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    # Messages acknowledged in this turn of the worker's event loop, whose entries in the
    # unacked hash and its index are removed together at the turn's end (_send_acks).
    _acks_to_send: list[str] | None = None

    def ack(self, delivery_tag: str) -> None:
        """kombu's ack, with the Redis side sent at the end of the event loop's turn, in one
        round trip for every message acknowledged in it: Celery runs the acknowledgements of
        the tasks that finished (a batch of events, workers/batching.py) one after another in
        one turn, and kombu's blocked the loop on Redis for each, a seventh of the main
        process's CPU at the latency run's pace. The message counts as acknowledged at once
        (the prefetch lets the next one in). Outside a running event loop (a consumer
        draining events itself) it is sent at once, as kombu does."""
        if self._left_for_redelivery(delivery_tag, "acknowledge"):
            return
        hub = _loop_running_here()
        if hub is None:
            super().ack(delivery_tag)
            return
        virtual.QoS.ack(self, delivery_tag)
        if self._acks_to_send is None:
            self._acks_to_send = []
            on_tick: Any = hub.on_tick  # a set in kombu 5.7 (its stubs say a list)
            on_tick.add(self._send_acks)
        self._acks_to_send.append(delivery_tag)

    def _send_acks(self) -> None:
        """Called by the event loop after the turn's ready callbacks (the acknowledgements),
        before it polls again; and before the channel gives its messages back."""
        tags, self._acks_to_send = self._acks_to_send, None
        hub = get_event_loop()
        if hub is not None:
            on_tick: Any = hub.on_tick
            on_tick.discard(self._send_acks)
        if not tags:
            return
        channel: Any = self.channel
        qos: Any = self  # kombu's stubs do not declare its helpers
        try:
            with qos.pipe_or_acquire() as pipe:
                pipe.zrem(qos.unacked_index_key, *tags)
                pipe.hdel(qos.unacked_key, *tags)
                pipe.execute()
        except (AttributeError, *channel.connection_errors) as exc:
            # Redis is gone, or the channel's transport (see _left_for_redelivery). As
            # kombu's ack_log_error does for one: the work is done, and the message, left in
            # the unacked hash, is delivered again after the visibility timeout, a duplicate
            # the inbox recognises.
            log.critical("could not acknowledge %d message(s): %r", len(tags), exc)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self._left_for_redelivery(delivery_tag, "reject"):
            return
        super().reject(delivery_tag, requeue)

    def _left_for_redelivery(self, delivery_tag: str, verb: str) -> bool:
        """A task that finishes after its connection was lost acknowledges a message of a
        closed channel. kombu then builds a Redis client from the detached transport and
        raises AttributeError, which no ack_log_error catches: it reached the event loop and
        stopped the worker (the fault suite's Redis restart test, once). Closing the channel
        put the message back on its queue or left it to the sweep, so it is delivered again
        and the inbox takes it as a duplicate: nothing is owed here."""
        channel: Any = self.channel
        if not channel.closed and getattr(channel.connection, "client", None) is not None:
            return False
        log.info(
            "cannot %s message %s on a closed channel: it is delivered again", verb, delivery_tag
        )
        return True

    def restore_unacked(self, client: Any = None) -> Any:
        channel: Any = self.channel
        self._send_acks()  # a warm shutdown: those are done, not to be given back
        try:
            return super().restore_unacked(client)
        except (AttributeError, *channel.connection_errors) as exc:
            delivered: dict[str, Any] = self._delivered or {}
            log.warning(
                "left %d unacknowledged message(s) for the visibility-timeout sweep: %s: %s",
                len(delivered),
                type(exc).__name__,
                exc,
            )
            delivered.clear()
            return None


class Channel(kombu_redis.Channel):
    Message = CheckedMessage
    QoS = QoS

    # Which command the pending reply answers: EVALSHA or EVAL (pop and record), or BLMOVE
    # (wait).
    _sent: str | None = None
    # Redis answered NOSCRIPT (it started after this channel's last EVAL): send it whole.
    _send_script = True
    # The delivery tag of the message being delivered, when the pop script recorded it.
    recorded_tag: str | None = None
    # The last pop found every queue empty: wait before popping again.
    _idle = False
    _wait_turn = 0
    # The key of the queue the last message came from: the one an idle channel waits on, so a
    # message there is taken at once; one on another queue waits at most WAIT_SECONDS.
    _wait_key: str | None = None

    # The synchronous client, and the connection pool it was made for.
    _sync_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Queues read without acknowledgement (a client's reply queue): nothing to record.
        self._no_ack_queues: set[str] = set()
        # The keys the pop script takes, by the order of the queues (their turn rotates).
        self._pop_keys: dict[tuple[str, ...], list[str]] = {}

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One synchronous client per connection pool, not one per use: kombu makes a new
        redis.Redis for every acknowledgement (conn_or_acquire), and redis-py's constructor
        fills a table of some 200 reply callbacks each time, a tenth of the worker's main
        process in a latency profile (bench/README.md, twelfth session). A client holds no
        connection of its own (each command takes one from the pool), so one serves every
        caller; a new pool (after a reconnect) gets a new client."""
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()  # type: ignore[misc]
        return client

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    # The type stubs for kombu do not describe the Redis channel's internals used here.
    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))  # type: ignore[attr-defined]
        kombu_connection: Any = self.connection.client
        options: dict[str, Any] = kombu_connection.transport_options or {}
        if (
            not options.get("reliable_fetch", True)
            or self.global_keyprefix
            or self._no_ack_queues.intersection(queues)
        ):
            # kombu's own BRPOP: when turned off (Redis before 6.2 has no BLMOVE), for keys
            # with a prefix (not replicated here), and for queues whose messages are never
            # acknowledged, so must not be recorded.
            self._sent = None
            super()._brpop_start(timeout)  # type: ignore[misc]
            return
        if not queues:
            return
        keys = self._keys_for(queues)
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        if self._idle:
            key = self._wait_key
            if key not in keys:
                key = keys[self._wait_turn % len(keys)]
                self._wait_turn += 1
            self._sent = "BLMOVE"
            connection.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", WAIT_SECONDS)
        else:
            script = POP_AND_RECORD if self._send_script else POP_AND_RECORD_SHA
            self._sent = "EVAL" if self._send_script else "EVALSHA"
            connection.send_command(
                self._sent,
                script,
                len(keys) + 2,
                *keys,
                self.unacked_key,
                self.unacked_index_key,
                repr(time.time()),
            )

    def _keys_for(self, queues: list[str]) -> list[str]:
        """The queue lists in the order to pop them: each priority step of every queue."""
        turn = tuple(queues)
        keys = self._pop_keys.get(turn)
        if keys is None:
            if len(self._pop_keys) >= 64:  # a worker consuming from many queues
                self._pop_keys.clear()
            keys = self._pop_keys[turn] = [
                self._q_for_pri(queue, priority)  # type: ignore[attr-defined]
                for priority in self.priority_steps
                for queue in queues
            ]
        return keys

    def _read_reply(self, **options: Any) -> bool:
        sent = self._sent
        if sent is None:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        client = self.client
        try:
            try:
                reply = client.parse_response(client.connection, sent, **options)
            except self.connection_errors:  # type: ignore[attr-defined]
                client.connection.disconnect()  # the next start reconnects
                raise
            except NoScriptError:
                # Nothing was popped: a Redis that lost its script cache (restarted) since
                # the last EVAL. The next pop sends the script itself.
                self._send_script = True
                raise Empty() from None
            if sent == "EVAL":
                self._send_script = False
            if sent == "BLMOVE":
                # Whether this queue got a message or the wait ran out, pop from all queues
                # next: a message may have arrived on one not waited on.
                self._idle = False
                raise Empty()
            if not reply:
                self._idle = True
                raise Empty()
            queue_key, item, more, *recorded = reply
            # The last message taken: wait for the next rather than pop from empty queues.
            self._idle = not more
            self._wait_key = bytes_to_str(queue_key)
            queue = self._wait_key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)  # type: ignore[attr-defined]
            text = bytes_to_str(item)
            self.recorded_tag = bytes_to_str(recorded[0]) if recorded else None
            try:
                try:
                    envelope = loads(text)
                except MALFORMED as exc:
                    raise ForeignEntry(text, f"{type(exc).__name__}: {exc}") from exc
                self.connection._deliver(envelope, queue)
            except ForeignEntry:
                if self.recorded_tag is not None:
                    # Recorded by the pop script, refused after it: out of the unacked hash
                    # too, or the visibility sweep would put it back (and it would be
                    # recorded again) every hour.
                    qos: Any = self.qos  # kombu's stubs do not declare its helpers
                    qos._remove_from_indices(self.recorded_tag).execute()
                raise
            finally:
                self.recorded_tag = None
            return True
        finally:
            self._in_poll = None
            self._sent = None
            self._flush_brpop_reauth()  # type: ignore[attr-defined]

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return self._read_reply(**options)
        except ForeignEntry as exc:

            record_foreign_entry(_raw_entry(exc), str(exc))
            return True
        except self.connection_errors:  # type: ignore[attr-defined]
            raise
        except MALFORMED as exc:

            record_foreign_entry(_raw_entry(exc), f"{type(exc).__name__}: {exc}")
            return True  # the entry was consumed; the loop goes on


class Transport(kombu_redis.Transport):
    Channel = Channel


# kombu's private methods the channel above overrides or calls, and the kombu releases it was
# written and tested against (pyproject.toml pins the same range; _flush_brpop_reauth is new
# in 5.7). A kombu outside them refuses to start instead of failing on the first message.
PRIVATE_NEEDS = {
    kombu_redis.Channel: ("_brpop_start", "_brpop_read", "_flush_brpop_reauth", "_q_for_pri",
                          "conn_or_acquire"),
    kombu_redis.QoS: ("restore_unacked", "append", "_remove_from_indices", "pipe_or_acquire",
                      "unacked_key", "unacked_index_key"),
}  # fmt: skip
KOMBU_RANGE = ((5, 7), (5, 8))


def check_kombu(version: str | None = None) -> None:
    """Raise SystemExit (one line, no traceback) when this kombu cannot carry the channel."""
    version = version or metadata.version("kombu")
    low, high = KOMBU_RANGE
    wanted = f"kombu>={low[0]}.{low[1]},<{high[0]}.{high[1]}"
    release = tuple(int(part) for part in version.split(".")[:2])
    missing = [
        f"{owner.__name__}.{name}"
        for owner, names in PRIVATE_NEEDS.items()
        for name in names
        if not hasattr(owner, name)
    ]
    if not low <= release < high or missing:
        problem = f"lacks {', '.join(missing)}" if missing else "is outside the tested range"
        raise SystemExit(
            f"clientflow: kombu {version} {problem}; the Redis channel needs {wanted} "
            "(pip install -c constraints.txt -e .)"
        )

