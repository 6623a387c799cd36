"""The worker's consumer, extended so no malformed message stalls, crashes or vanishes.

Celery logs and acknowledges messages it cannot decode, and messages naming a task it does not
know; both would vanish from everything but the log, and its log lines carry the whole body
(personal data). A message whose body is not `[args, kwargs, embed]` is worse: the strategy
raises, nothing acknowledges it, and it holds the prefetch slot for good (and again after a
restart). A body nesting hundreds of levels deep kills the worker when it is pickled for the
pool. Here every such message is written to the rejected events with what could be read of it
and a reason, logged as one line naming the task and ids only, and acknowledged, so the next
message flows. One that cannot be written (the database is away) is rejected instead: RabbitMQ
dead-letters it, and the dead-letter queue's reader records it once the database is back
(workers/broker/dead_letters.py); on Redis the log line is what remains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import DecodeError
from vine import promise

from models.contracts.common import json_depth
from services.rejections import event_id_of, record_rejection
from tasks import runtime
from workers import batching

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 65_536
# A task body is [args, kwargs, embed]: two levels before a value. Far above what any event
# needs (a notification's context may nest 16 levels; the contract says so with a reason),
# far below where JSON decoding and pickling to the pool recurse to death.
MAX_BODY_DEPTH = 64
# What a protocol 2 embed (or a protocol 1 body) may carry that makes Celery run more after
# the task.
WORKFLOW_KEYS = ("callbacks", "errbacks", "chain", "chord")


def _readable_body(message: Any) -> str:
    body = getattr(message, "body", b"")
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    raw = bytes(body[:MAX_BODY_BYTES])
    return raw.decode("utf-8", "backslashreplace")


def _headers(message: Any) -> dict[str, Any]:
    headers = getattr(message, "headers", None)
    return headers if isinstance(headers, dict) else {}


def _decoded(message: Any) -> Any:
    """The body as Celery will read it (kombu caches it), or None where it cannot be decoded."""
    try:
        return message.decode()
    except Exception:
        return None


def _event_id(message: Any, headers: dict[str, Any]) -> Any:
    """The event's own id where the body can be read, so ops and publishers find the refusal
    under the id they published; else the task id."""
    payload = _decoded(message)
    if isinstance(payload, dict):  # protocol 1: task, id, args and kwargs all in the body
        kwargs, body_id = payload.get("kwargs"), payload.get("id")
    else:
        kwargs = payload[1] if isinstance(payload, list | tuple) and len(payload) > 1 else None
        body_id = None
    return event_id_of(kwargs) or headers.get("id") or body_id


def _task_name(message: Any) -> str:
    """The task a message names: in its headers (protocol 2) or its body (protocol 1)."""
    name = _headers(message).get("task")
    if name is None:
        payload = _decoded(message)
        name = payload.get("task") if isinstance(payload, dict) else None
    return str(name or "<invalid>")


def record_message(task_name: str, message: Any, reason: str) -> bool:
    """Write a message that cannot be run to the rejected events; False when that failed."""
    headers = _headers(message)
    message_id = _event_id(message, headers)
    # Ids and the task name only: the body holds personal data and stays in the record.
    log.error(
        "refused message task=%r id=%r: %s", task_name, message_id, reason.splitlines()[0][:300]
    )
    readable = {
        "headers": {str(k): str(v) for k, v in headers.items()},
        "body": _readable_body(message),
    }
    try:
        record_rejection(
            runtime.session_factory(),
            task_name,
            readable,
            reason,
            event_id=str(message_id) if message_id is not None else None,
        )
    except Exception:
        # Never let bookkeeping take the consumer down; the log line above remains.
        log.exception("could not record a malformed message")
        return False
    return True


def record_foreign_entry(raw: str, error: str) -> None:
    """A queue entry that is not a kombu message at all (see workers/broker/redis_transport.py)."""
    log.error("refused queue entry: not a Celery message: %s", error[:300])
    try:
        record_rejection(
            runtime.session_factory(),
            "<not a message>",
            {"entry": raw[:MAX_BODY_BYTES]},
            f"queue entry is not a Celery message: {error}",
        )
    except Exception:
        log.exception("could not record a foreign queue entry")


def _seconds(value: Any) -> bool:
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    )


def header_problem(headers: dict[str, Any], where: str = "header") -> str | None:
    """Why Celery's own headers cannot be used, or None.

    Celery reads some of them only when the task leaves for the pool, which under load happens
    later, from the pool's semaphore, outside any handler: a bad `timelimit` there stopped the
    worker ("Unrecoverable error"), so they are checked before the message is taken. `where`
    names what carries them in the reason: the headers, or a protocol 1 body.
    """
    if "task" not in headers:
        return None  # protocol 1, or not a task message: Celery's own checks say which
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return f"{where} 'id' must be a non-empty string (the task id)"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple) and len(limits) == 2 and all(map(_seconds, limits))
    ):
        return f"{where} 'timelimit' must be [soft, hard] in seconds (each a number or null)"
    retries = headers.get("retries")
    if retries is not None and (
        not isinstance(retries, int) or isinstance(retries, bool) or retries < 0
    ):
        return f"{where} 'retries' must be a whole number of at least 0"
    return None


def protocol_1_problem(payload: Any) -> str | None:
    """Why a protocol 1 message cannot be run, or None.

    Protocol 1 carries the task, its id, args, kwargs and Celery's options (timelimit,
    callbacks, ...) in the body, and Celery turns that body into the headers of protocol 2: a
    bad `timelimit` there stopped the worker just as one in the headers did, and callbacks ran
    after the task. The body gets the checks protocol 2's headers and embed get.
    """
    if not isinstance(payload, dict) or "task" not in payload:
        return None  # not a task message: Celery's own check records it (on_unknown_message)
    problem = header_problem(payload, where="protocol 1 body field")
    if problem is not None:
        return problem
    if not isinstance(payload.get("args", []), list) or not isinstance(
        payload.get("kwargs", {}), dict
    ):
        return "protocol 1 body needs 'args' as a list and 'kwargs' as an object"
    return _workflow_problem(payload, "protocol 1 body")


def _workflow_problem(options: dict[str, Any], where: str) -> str | None:
    workflow = sorted(k for k in WORKFLOW_KEYS if options.get(k))
    if workflow:
        # Celery acts on these in the pool after the task has run; nothing upstream needs them.
        return f"clientflow's tasks take no callbacks, chains or chords ({where} has {workflow})"
    return None


def body_problem(message: Any) -> str | None:
    """Why this task message cannot be run, or None. Decodes its body (kombu caches it)."""
    problem = header_problem(_headers(message))
    if problem is not None:
        return problem
    payload = message.decode()  # too deep for the decoder: DecodeError, the caller's
    depth = json_depth(payload)
    if depth > MAX_BODY_DEPTH:
        return f"body nests {depth} levels deep; the limit is {MAX_BODY_DEPTH}"
    if "task" not in _headers(message):
        return protocol_1_problem(payload)
    shape_ok = (
        isinstance(payload, list | tuple)
        and len(payload) == 3
        and isinstance(payload[0], list | tuple)
        and isinstance(payload[1], dict)
        and isinstance(payload[2], dict | None)
    )
    if not shape_ok:
        return "body is not [args, kwargs, embed] (Celery message protocol 2)"
    return _workflow_problem(payload[2] or {}, "embed")


class RecordingConsumer(Consumer):
    # Set by Celery's Consumer at run time; celery-types does not declare them.
    connection_errors: tuple[type[BaseException], ...]
    event_dispatcher: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Before the task strategies are made (at start): they take on_task_request then.
        self.batcher = batching.install(self)

    def on_close(self) -> None:
        super().on_close()
        if self.batcher is not None:
            self.batcher.forget()

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], Any]:
        handle = super().create_task_handler(promise)

        def on_task_received(message: Any) -> Any:
            name = _task_name(message)
            try:
                problem = body_problem(message)
                if problem is None:
                    return handle(message)
            except DecodeError as exc:
                return self.on_decode_error(message, exc)
            except Exception as exc:
                if isinstance(exc, self.connection_errors) and not isinstance(exc, LookupError):
                    raise  # the broker went away: Celery reconnects and redelivers
                # kombu counts KeyError among the Redis transport's connection errors, but
                # here it is a message without an `id` header: taken for a lost connection it
                # made the consumer restart and get the same message back, for ever.
                # Anything Celery's strategy could not take would otherwise stay unacknowledged
                # and hold the prefetch slot, stalling every message behind it.
                problem = f"message is not a valid task message: {type(exc).__name__}: {exc}"
            self._settle(message, record_message(name, message, problem))
            return None

        return on_task_received

    def _settle(self, message: Any, recorded: bool) -> None:
        """Acknowledge a message once it is recorded: it is done with, and on RabbitMQ a
        reject would dead-letter it and have it recorded a second time. One that could not
        be recorded is rejected: RabbitMQ dead-letters it, to be recorded later."""
        if recorded:
            message.ack_log_error(log, self.connection_errors)
        else:
            message.reject_log_error(log, self.connection_errors)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        recorded = record_message(
            "<undecodable>",
            message,
            f"message body cannot be decoded ({message.content_type}): {exc}",
        )
        self._settle(message, recorded)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        reason = "message is not a task message: it names no task"
        self._settle(message, record_message("<invalid>", message, reason))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = _headers(message)
        name = _task_name(message)
        reason = f"unknown task {name!r}: no such event"
        self._settle(message, record_message(name, message, reason))
        if self.event_dispatcher and "id" in headers:
            self.event_dispatcher.send(
                "task-failed", uuid=headers["id"], exception=f"NotRegistered({name!r})"
            )

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        reason = f"message is not a valid task message: {exc}"
        self._settle(message, record_message(_task_name(message), message, reason))
