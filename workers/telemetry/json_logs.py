"""Log lines as one JSON object each, carrying the task name, task id and event id.

The ids come from a context variable that ops/hooks.py sets around every task run, so a line
from any library inside the task carries them too, and `grep '"event_id": "X"'` over the logs
of every worker follows one event.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# Fields of every line, present (null outside a task) so that queries never miss a key.
CONTEXT_FIELDS = ("task_name", "task_id", "event_id")
# Celery attaches a task's arguments to some records as `data`; they hold client details
# (names, addresses), which belong in the database, not in log storage.
DROPPED_FIELDS = ("data",)
_EVENT_ID_IN_REPR = re.compile(r"'event_id': '([^'\\]{1,128})'")


@dataclass(frozen=True)
class TaskContext:
    task_name: str | None
    task_id: str | None
    event_id: str | None


_current: ContextVar[TaskContext | None] = ContextVar("clientflow_task", default=None)


def enter_task(context: TaskContext) -> None:
    _current.set(context)


def leave_task() -> None:
    _current.set(None)


def current() -> TaskContext | None:
    return _current.get()


class TaskContextFilter(logging.Filter):
    """Puts the running task's names on every record (None outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get() or _received(record)
        for name in CONTEXT_FIELDS:
            setattr(record, name, getattr(context, name) if context else None)
        return True


def _received(record: logging.LogRecord) -> TaskContext | None:
    # "Task X[id] received" is logged by the worker's main process before any task runs;
    # Celery gives its id and name (and a repr of the arguments) as the record's data.
    data = getattr(record, "data", None)
    if not isinstance(data, dict) or "id" not in data or "name" not in data:
        return None
    found = _EVENT_ID_IN_REPR.search(str(data.get("kwargs", "")))
    return TaskContext(str(data["name"]), str(data["id"]), found.group(1) if found else None)


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "%(levelname)s %(name)s %(processName)s %(message)s "
        + " ".join(f"%({name})s" for name in CONTEXT_FIELDS),
        rename_fields={"levelname": "level", "name": "logger", "processName": "process"},
        reserved_attrs=[*RESERVED_ATTRS, *DROPPED_FIELDS],
        timestamp=True,
    )


def use_json(logger: logging.Logger) -> None:
    """Every handler of logger writes JSON lines with the task context."""
    for handler in logger.handlers:
        handler.setFormatter(json_formatter())
        if not any(isinstance(f, TaskContextFilter) for f in handler.filters):
            handler.addFilter(TaskContextFilter())
