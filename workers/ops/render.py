"""The Snapshot as Rich tables, for people (scripts read `ops status --json` instead).

Also `literal`, the one way every clientflow table shows text that came from a message.
"""

from __future__ import annotations

import re
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from workers.ops.snapshot import ReasonCount, Snapshot
from workers.ops.status import FAILED_RUN, unhealthy

# C0 controls but newline, DEL, C1 controls, and the bidirectional overrides and isolates
# that can make a terminal show text in another order than it is.
# Brokers whose queues cannot be read past their depth (workers/ops/queues.py).
AMQP_URIS = ("amqp://", "amqps://", "pyamqp://")
NOT_AVAILABLE = "not available"

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def literal(value: object, style: str = "") -> Text:
    """Text from a message (an id, a task name, a reason) shown exactly as it is, never obeyed.

    A Text is never parsed as Rich markup, so `[link=...]x[/link]` shows as those characters;
    control characters (an escape sequence could retitle the terminal or hide text) show as
    `\\x1b`-style escapes. Use it for every table cell whose value came from outside.
    """
    text = "" if value is None else str(value)
    return Text(_CONTROL.sub(_escaped, text), style)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def render(snapshot: Snapshot) -> RenderableType:
    parts: list[RenderableType] = [
        Text(f"clientflow at {_when(snapshot.taken_at)} UTC, broker ", "bold")
        + literal(snapshot.broker, "bold")
    ]
    parts.extend(literal(f"problem: {p}", "bold red") for p in snapshot.problems)
    parts += [_queues(snapshot), _workers(snapshot), _tasks(snapshot)]
    parts += [_troubles(snapshot), _emails_and_runs(snapshot), _storage(snapshot)]
    parts.append(_health(snapshot))
    return Group(*parts)


def _health(s: Snapshot) -> Text:
    reasons = unhealthy(s)
    if not reasons:
        return Text("healthy", "bold green")
    # Last, so on call reads the verdict (and why `ops status` exits 1) where the output ends.
    return Text("unhealthy: ", "bold red") + literal("; ".join(reasons), "bold red")


def _queues(s: Snapshot) -> Table:
    # AMQP cannot show a queue's oldest message without taking it, nor count the messages
    # workers hold: say so rather than leave a blank that reads like zero or "unknown".
    amqp = s.broker.startswith(AMQP_URIS)
    caption = (
        f"{NOT_AVAILABLE}: RabbitMQ does not tell over AMQP (`rabbitmqctl list_queues name "
        "messages_ready messages_unacknowledged` counts the held ones)"
        if amqp
        else None
    )
    table = Table(title="Queues", title_justify="left", caption=caption, caption_justify="left")
    for column in ("queue", "depth", "oldest waiting", "unacked", "scheduled (ETA)"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for q in s.queues:
        if q.depth is None:
            oldest = "n/a"
        elif q.depth == 0:
            oldest = "-"
        elif q.oldest_age_seconds is None:
            oldest = NOT_AVAILABLE if amqp else "unknown"
        else:
            oldest = _duration(q.oldest_age_seconds)
        unacked = NOT_AVAILABLE if amqp and q.depth is not None else _n(q.unacked)
        style = "yellow" if q.oldest_age_seconds and q.oldest_age_seconds > 60 else None
        table.add_row(
            literal(q.name), _n(q.depth), oldest, unacked, _n(q.scheduled), style=style
        )
    return table


def _workers(s: Snapshot) -> RenderableType:
    if s.workers is None:
        return Text("Workers: n/a (broker unreachable)", "red")
    if not s.workers:
        return Text("Workers: none online", "bold red")
    table = Table(title=f"Workers online: {len(s.workers)}", title_justify="left")
    for column in ("worker", "queues", "active", "scheduled", "running now"):
        numeric = column in ("active", "scheduled")
        table.add_column(column, overflow="fold", justify="right" if numeric else "left")
    for w in s.workers:
        running = literal(
            "\n".join(
                f"{t.name} {t.id[:8]}"
                + (f" event {t.event_id}" if t.event_id else "")
                + (f" since {_when(t.started_at)}" if t.started_at else "")
                for t in w.active
            )
        )
        table.add_row(
            literal(w.name),
            literal(", ".join(w.queues)),
            str(len(w.active)),
            str(w.scheduled),
            running,
        )
    return table


def _tasks(s: Snapshot) -> RenderableType:
    if s.tasks_last_hour is None:
        return Text("Tasks in the last hour: n/a", "red")
    table = Table(title="Tasks in the last hour", title_justify="left")
    for column in ("task", "succeeded", "rejected", "failed", "retried", "mean runtime"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for t in s.tasks_last_hour:
        table.add_row(
            literal(t.task_name),
            str(t.succeeded),
            Text(str(t.rejected), "yellow" if t.rejected else ""),
            Text(str(t.failed), "bold red" if t.failed else ""),
            str(t.retried),
            _duration(t.runtime_avg_seconds) if t.runtime_avg_seconds is not None else "-",
        )
    if not s.tasks_last_hour:
        table.add_row("(none)", "0", "0", "0", "0", "-")
    return table


def _troubles(s: Snapshot) -> RenderableType:
    if s.dead_letters is None or s.rejected_events is None:
        return Text("Dead letters and rejected events: n/a", "red")
    table = Table(title="Dead letters and rejected events", title_justify="left")
    for column in ("kind", "count", "last", "reason"):
        table.add_column(column, overflow="fold")
    d, r = s.dead_letters, s.rejected_events
    table.add_row("dead letters", str(d.total), "", f"{d.not_replayed} not replayed")
    _reason_rows(table, d.by_reason)
    table.add_row("rejected events", str(r.total), "", f"{r.waiting} waiting for a reference")
    _reason_rows(table, r.by_reason)
    return table


def _reason_rows(table: Table, reasons: list[ReasonCount]) -> None:
    for reason in reasons:
        table.add_row("", str(reason.count), _when(reason.last_at), literal(reason.reason))


def _emails_and_runs(s: Snapshot) -> RenderableType:
    lines: list[RenderableType] = []
    if s.emails is None:
        lines.append(Text("Emails: n/a", "red"))
    else:
        e = s.emails
        lines.append(
            Text(f"Emails: {e.queued} queued, {e.sending} sending, {e.sent} sent, ")
            + Text(f"{e.failed} failed", "bold red" if e.failed else "")
        )
    run = s.last_invoice_run
    if run is None:
        lines.append(Text("Last invoice run: none recorded"))
    else:
        counts = ", ".join(f"{k} {_count(v)}" for k, v in run.counts.items()) or "no counts"
        text = (
            f"Last invoice run: {run.status}, started {_when(run.started_at)}, "
            f"finished {_when(run.finished_at)}, {counts}"
        )
        if run.error:
            text += f"; error: {run.error}"
        lines.append(literal(text, "red" if run.status in FAILED_RUN else ""))
    return Group(*lines)


def _storage(s: Snapshot) -> RenderableType:
    if s.tables is None:
        return Text("Tables: n/a", "red")
    table = Table(title="Tables that grow", title_justify="left")
    for column in ("table", "rows", "size", "kept"):
        table.add_column(column, justify="right" if column in ("rows", "size") else "left")
    for t in s.tables:
        size = "-" if t.bytes is None else _bytes(t.bytes)
        table.add_row(t.table, f"{t.rows:,}", size, t.kept)
    return table


def _bytes(value: int) -> str:
    if value < 1024:
        return f"{value} B"
    size = float(value)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:,.1f} {unit}"


def _count(value: object) -> str:
    """A run's count; a breakdown (notices by kind, batches by pass) shows its non-zero parts."""
    if isinstance(value, dict):
        parts = [f"{k} {v}" for k, v in value.items() if v]
        return " / ".join(parts) if parts else "0"
    return str(value)


def _n(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
