"""`clientflow emails`: the message log: list, show, resend one, retry the failed ones."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from models.settings import get_settings
from services.errors import BadFilter
from services.mail.lookup import (
    DEFAULT_LIMIT,
    STATUSES,
    EmailFilter,
    list_emails,
    view_email,
)
from services.mail.resend import CannotResend, resend
from services.mail.retry import retry_failed
from tasks import runtime
from workers.cli.common import console, database, print_json, refuse, require_broker
from workers.cli.email_views import email_card, email_detail_record, email_record, emails_table

emails_app = typer.Typer(help="The email message log.", no_args_is_help=True)


@emails_app.command("list")
def emails_list(
    client: str | None = typer.Option(None, "--client", help="Only this client's emails."),
    status: str | None = typer.Option(
        None, "--status", help=f"Only those in this state: {', '.join(STATUSES)}."
    ),
    template: str | None = typer.Option(
        None, "--template", help="Only this template's, e.g. invoice_created."
    ),
    limit: int = typer.Option(DEFAULT_LIMIT, min=1, max=10_000, help="Newest first, at most."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array, for scripts."),
) -> None:
    """List the message log: id, when, client, recipient, subject, template, event, status."""
    where = EmailFilter(client, status, template, limit)
    with database() as session:
        try:
            messages = list_emails(session, where)
        except BadFilter as exc:
            raise typer.BadParameter(str(exc), param_hint=f"'--{exc.name}'") from exc
    if as_json:
        print_json([email_record(message) for message in messages])
        return
    console.print(emails_table(messages, f"Email message log ({len(messages)} shown)"))


@emails_app.command("show")
def emails_show(
    message_id: str = typer.Argument(..., metavar="ID", help="The email's id (emails list)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """One email: its headers as sent, idempotency key, event, status, attempts, text part."""
    settings = get_settings()
    with database() as session:
        view = view_email(session, message_id, settings.mail_from, settings.reply_to or None)
    if view is None:
        refuse(f"no email {message_id!r} in the message log")
    if as_json:
        print_json(email_detail_record(view))
        return
    console.print(email_card(view))


@emails_app.command("resend")
def emails_resend(
    message_id: str = typer.Argument(..., metavar="ID", help="The email's id (emails list)."),
    key: str | None = typer.Option(
        None,
        "--key",
        help="Resend once per key: running it again with the same key sends nothing more.",
    ),
) -> None:
    """Send a sent or failed email again: the same content to the same recipient, as a new
    message of the log marked as a resend of the first."""
    # Its delivery is published to the broker: it must answer before anything is queued.
    require_broker()
    with database():
        try:
            done = resend(runtime.session_factory(), runtime.publish, message_id, key=key)
        except CannotResend as exc:
            refuse(str(exc))
    copy = done.copy
    if not done.new:
        console.print(
            f"email {message_id} was already resent with this key as {copy.id} "
            f"({copy.status}): nothing more queued"
        )
        return
    delivery = "delivery published" if done.published else "delivery left to the outbox relay"
    console.print(f"resent email {message_id} as {copy.id}: queued, {delivery}")
    if done.client_status == "Closed":
        console.print(
            f"note: client {copy.client_id} is Closed; an operator may still resend its mail"
        )


@emails_app.command("retry")
def emails_retry(
    failed: bool = typer.Option(False, "--failed", help="Required: put failed emails back."),
    since: str | None = typer.Option(
        None, "--since", help="Only those that failed from this day or time on (UTC)."
    ),
) -> None:
    """Put failed emails back in the queue with their attempts reset, and deliver them."""
    if not failed:
        raise typer.BadParameter("give --failed: only failed emails are put back in the queue")
    start = _parse_since(since)
    require_broker()
    with database():
        retried = retry_failed(runtime.session_factory(), runtime.publish, since=start)
    if not retried.requeued:
        console.print("requeued 0 failed emails: none to retry")
    elif retried.published == retried.tasks:
        console.print(f"requeued {len(retried.requeued)} failed email(s); delivery published")
    else:
        console.print(
            f"requeued {len(retried.requeued)} failed email(s); "
            f"{retried.tasks - retried.published} delivery task(s) left to the outbox relay"
        )
    if retried.pruned:
        console.print(
            f"{retried.pruned} failed email(s) left failed: retention pruned their bodies"
        )


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a date like 2026-01-31 (or a time like 2026-01-31T09:30)",
            param_hint="'--since'",
        ) from exc
    # A day or time without a zone is UTC, as every time clientflow shows.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
