"""Settings read from CLIENTFLOW_* environment variables; the defaults are the embedded mode.

With nothing set, everything lives under ./var: SQLite for data, kombu's filesystem transport
as the broker and .eml files instead of SMTP, so the demo needs no server at all.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import DirectoryPath, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.company import INVOICE_URL_FIELDS, Company
from models.contracts.common import CONTROL_CHARACTERS, Category
from models.emails import UNSUBSCRIBE_URL_MAX_CHARS

# The longest token a URL template must leave room for (models/contracts/unsubscribe_token.py
# gives about 370 characters).
_TOKEN_ROOM = 400
# Shorter is a password, not a key: `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
UNSUBSCRIBE_SECRET_MIN_CHARS = 32


def _checked_url(value: str, *, schemes: tuple[str, ...]) -> str:
    """An optional URL put into HTML attributes: empty, or one of `schemes` with nothing that
    could end the attribute or the line."""
    value = value.strip()
    if not value:
        return value
    if not value.startswith(schemes):
        raise ValueError(f"must start with {' or '.join(schemes)}")
    if CONTROL_CHARACTERS.search(value) or any(c in value for c in " <>\"'"):
        raise ValueError("must not contain spaces, quotes, angle brackets or control characters")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIENTFLOW_", extra="ignore")

    data_dir: Path = Field(
        default=Path("var"), description="Where the embedded defaults keep their files."
    )
    broker_url: str = Field(
        default="filesystem://",
        description="Celery broker, e.g. redis://127.0.0.1:6379/0. "
        "filesystem:// keeps queues as files under data_dir/broker.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. "
        "Empty means SQLite at data_dir/clientflow.db.",
    )
    smtp_url: str = Field(
        default="",
        description="smtp://user:pass@host:port (smtps:// for TLS, ?starttls=true to upgrade). "
        "Empty means write each email as an .eml file under mail_dir.",
    )
    mail_dir: Path | None = Field(
        default=None, description="Folder for .eml files when smtp_url is empty (data_dir/mail)."
    )
    mail_from: str = Field(
        default="Clientflow <billing@clientflow.localhost>",
        description="The From header of every email.",
    )
    reply_to: str = Field(
        default="",
        description="The Reply-To header of every email (e.g. support@...); empty: none, "
        "replies go to mail_from.",
    )
    company_name: str = Field(default="Clientflow Hosting", description="Signature in emails.")
    # NoDecode: the variable is lines of text (newlines, or a literal \n in a .env file) or
    # a JSON list, not always JSON.
    company_address: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="The company's postal address in every email's footer and on the invoice "
        "PDF, one line per entry: newlines (or a literal \\n) between lines, or a JSON list. "
        "Empty: no address.",
    )
    company_logo_url: str = Field(
        default="",
        description="An https:// URL of the logo shown in every email's header (about 200 px "
        "wide). Empty: the company's name in text, no image.",
    )
    client_area_url: str = Field(
        default="",
        description="The client area's address (http:// or https://), linked from every "
        "email's footer. Empty: no link.",
    )
    invoice_url: str = Field(
        default="",
        description="The page where a client pays an invoice, linked as \"Pay this invoice\" in "
        "the invoice emails: an http(s):// URL with {invoice_id} or {number} where the "
        "invoice's id or number goes, e.g. https://billing.example.com/invoice/{invoice_id}. "
        "Empty: no link.",
    )
    template_dir: DirectoryPath | None = Field(
        default=None,
        description="The operator's email templates, searched before the shipped ones, in "
        "the same <name>/{subject.txt, body.txt, body.html} layout (docs/templates.md). "
        "Read once per process: restart the workers after changing it.",
    )
    smtp_timeout: float = Field(default=30.0, description="Seconds per SMTP command.")
    email_max_retries: int = Field(
        default=8, description="Transient SMTP failures retried this many times before failed."
    )
    event_max_retries: int = Field(
        default=10, description="Transient database/broker failures retried this many times."
    )
    retry_backoff_base: float = Field(
        default=2.0, description="First retry delay in seconds; doubles each retry (jittered)."
    )
    retry_backoff_max: float = Field(
        default=600.0, description="Longest retry delay; kept below the Redis visibility timeout."
    )
    redis_visibility_timeout: int = Field(
        default=3600,
        description="Seconds before Redis hands an unacknowledged message (its worker died) "
        "to another worker. Must exceed retry_backoff_max.",
    )
    task_stats_keep_hours: int = Field(
        default=48,
        ge=2,
        description="Per-minute task counters older than this are folded into all-time totals "
        "(hourly, by beat); the last-hour view and Prometheus counters are unaffected.",
    )
    processed_events_keep_days: float = Field(
        default=90.0,
        ge=0,
        description="The idempotency window: an applied event's id is kept this long, and a "
        "redelivery or replay within it is a duplicate; after it the same id is applied again. "
        "0 keeps them for ever. Must exceed the Redis visibility timeout.",
    )
    email_bodies_keep_days: float = Field(
        default=90.0,
        ge=0,
        description="Sent or failed emails older than this lose their text and HTML bodies; "
        "the row (recipient, subject, status, idempotency key) stays. 0 keeps them.",
    )
    rejected_events_keep_days: float = Field(
        default=90.0,
        ge=0,
        description="Refused events older than this are deleted (those still waiting for a "
        "client, contact or invoice are kept). 0 keeps them.",
    )
    audit_keep_days: float = Field(
        default=365.0,
        ge=0,
        description="Audit rows (who changed what on a client) older than this are deleted. "
        "0 keeps them.",
    )
    scheduled_runs_keep_days: float = Field(
        default=90.0,
        ge=0,
        description="Scheduled runs (the invoice run) that finished (succeeded, failed or "
        "abandoned) longer ago than this are deleted with their chunks; the notices they sent "
        "stay, no longer naming the run. A running one is never deleted. 0 keeps them.",
    )
    redis_reliable_fetch: bool = Field(
        default=True,
        description="Pop and record each message atomically (needs Redis 6.2+). False falls "
        "back to kombu's BRPOP, which can lose a message to a worker killed mid-fetch.",
    )
    redis_restore_interval: int = Field(
        default=60, description="Seconds between a worker's scans for such messages."
    )
    redis_restore_lock_seconds: int = Field(
        default=300,
        ge=1,
        description="Expiry of the lock one worker holds while it scans (kombu's "
        "unacked_mutex_expire): a scan cut off by a Redis outage blocks every scan this long.",
    )
    outbox_relay_seconds: float = Field(
        default=30.0, description="Beat runs the outbox relay this often."
    )
    outbox_min_age_seconds: float = Field(
        default=10.0, description="The relay leaves outbox rows younger than this alone."
    )
    email_redeliver_after_seconds: float = Field(
        default=7200.0,
        description="A queued email untouched this long has lost its delivery task (a worker "
        "killed at the wrong instant); the relay stages a new one. Must exceed "
        "redis_visibility_timeout, the longest a live task can be held by a dead worker.",
    )
    sent_record_commit: Literal["synchronous", "asynchronous"] = Field(
        default="synchronous",
        description="How PostgreSQL commits the record of each email the mail server accepted: "
        "synchronous (on disk before it counts), or asynchronous (synchronous_commit off for that "
        "statement alone: more emails a second; a crash of the database server, not of a worker, "
        "may lose the last ~0.6 s of records, whose emails are then sent again after their "
        "lease: duplicates, never losses).",
    )
    sending_lease_seconds: float = Field(
        default=300.0,
        description="An email claimed for sending longer than this is taken as abandoned "
        "(its worker died) and requeued by the relay.",
    )

    task_soft_time_limit: float = Field(
        default=240.0,
        ge=0,
        description="Seconds a task may run before it is interrupted and retried "
        "(SoftTimeLimitExceeded); 0 for none. Not inside an SMTP acceptance's recording.",
    )
    task_time_limit: float = Field(
        default=300.0,
        ge=0,
        description="Seconds after which a task's pool process is killed and the task recorded "
        "as a dead letter; 0 for none. Above task_soft_time_limit; keep sending_lease_seconds "
        "at least this long, so a running delivery's claims are not taken for abandoned.",
    )

    invoice_run_cron: str = Field(
        default="0 6 * * *",
        description="When beat starts the invoice run: a crontab line "
        "(minute hour day-of-month month day-of-week), in UTC. Default daily at 06:00.",
    )
    invoice_lead_days: int = Field(
        default=14, ge=0, le=365, description="Invoices are generated this many days before due."
    )
    invoice_reminder_days: int = Field(
        default=7, ge=0, le=365, description="The Payment Reminder, days before the due date."
    )
    # NoDecode: the variable is "1,7,14", not JSON.
    invoice_overdue_days: Annotated[tuple[int, int, int], NoDecode] = Field(
        default=(1, 7, 14),
        description="First, Second and Third Overdue notices, days after the due date "
        "(e.g. CLIENTFLOW_INVOICE_OVERDUE_DAYS=1,7,14).",
    )
    invoice_batch_size: int = Field(
        default=500, ge=1, le=2000, description="Services or invoices per batch transaction."
    )
    invoice_pdf: bool = Field(
        default=True,
        description="Attach the invoice as a PDF (invoice-<number>.pdf) to the Invoice Created "
        "and the three Overdue emails, made when each is delivered (docs/email.md).",
    )
    invoice_run_delivers: bool = Field(
        default=True,
        description="The invoice run's chunks send each batch's emails themselves, right after "
        "the batch's commit (for the first half of their soft time limit); false: each batch "
        "publishes an emails.deliver task instead, for the workers of the emails queue.",
    )
    invoice_chunk_size: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Services or invoices per chunk: the run splits each pass into chunks of "
        "about this many, each a task any worker takes (its batches are batch-size long).",
    )

    @field_validator("invoice_overdue_days", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.strip("[] ").split(","))
        return value

    @field_validator("company_address")
    @classmethod
    def _printable_lines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(CONTROL_CHARACTERS.search(line) for line in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("invoice_overdue_days")
    @classmethod
    def _increasing(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not 0 < value[0] < value[1] < value[2]:
            raise ValueError("must be three increasing numbers of days above 0, e.g. 1,7,14")
        return value

    @field_validator("invoice_run_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must have five fields: minute hour day-of-month month day-of-week")
        return value

    # NoDecode: the variable is "invoice,support", not JSON.
    required_email_categories: Annotated[frozenset[Category], NoDecode] = Field(
        default=frozenset(),
        description="Email categories the business must send: they reach the account holder "
        "whatever the holder's preferences say, an opt-out of one is refused, and their "
        "emails carry no List-Unsubscribe (e.g. CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES="
        "invoice,support). Empty: the holder may turn any category off. Contacts are not "
        "affected: they receive what they are ticked for.",
    )
    unsubscribe_url: str = Field(
        default="",
        description="The one-click unsubscribe URL (RFC 8058) put in the List-Unsubscribe "
        "header of every email its recipient may turn off: an https:// URL with {token} where "
        "the signed token goes, e.g. https://billing.example.com/unsubscribe?token={token}. "
        "Empty: no such header. Needs unsubscribe_secret.",
    )
    unsubscribe_secret: SecretStr = Field(
        default=SecretStr(""),
        description="The HMAC-SHA256 key that signs and checks unsubscribe tokens (at least "
        f"{UNSUBSCRIBE_SECRET_MIN_CHARS} characters). Changing it voids every link already "
        "sent. Empty: recipients.unsubscribe refuses every token.",
    )
    unsubscribe_token_days: float = Field(
        default=90.0,
        gt=0,
        description="How long an unsubscribe link works, counted from when its email was "
        "queued; an expired one is refused.",
    )

    @field_validator("company_address", mode="before")
    @classmethod
    def _address_lines(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                return tuple(
                    line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip()
                )
        if isinstance(value, list | tuple):
            return tuple(str(line).strip() for line in value if str(line).strip())
        return value

    @field_validator("company_logo_url")
    @classmethod
    def _logo_url(cls, value: str) -> str:
        # https only: mail clients block or warn about images over plain http.
        return _checked_url(value, schemes=("https://",))

    @field_validator("client_area_url")
    @classmethod
    def _client_area_url(cls, value: str) -> str:
        return _checked_url(value, schemes=("https://", "http://"))

    @field_validator("invoice_url")
    @classmethod
    def _invoice_url(cls, value: str) -> str:
        value = _checked_url(value, schemes=("https://", "http://"))
        if value and not any(field in value for field in INVOICE_URL_FIELDS):
            raise ValueError("must contain {invoice_id} or {number}, where the invoice goes")
        return value

    @field_validator("required_email_categories", mode="before")
    @classmethod
    def _category_list(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("unsubscribe_url")
    @classmethod
    def _url_template(cls, value: str) -> str:
        if not value:
            return value
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (RFC 8058 one-click unsubscribe)")
        if value.count("{token}") != 1:
            raise ValueError("must contain {token} once, where the signed token goes")
        if CONTROL_CHARACTERS.search(value) or " " in value or any(c in value for c in "<>"):
            raise ValueError("must not contain spaces, angle brackets or control characters")
        if len(value) - len("{token}") + _TOKEN_ROOM > UNSUBSCRIBE_URL_MAX_CHARS:
            raise ValueError(
                f"is too long: with a token it must fit the header's "
                f"{UNSUBSCRIBE_URL_MAX_CHARS} characters"
            )
        return value

    amqp_delivery_limit: int = Field(
        default=20,
        ge=1,
        description="RabbitMQ only: a message handed out this many times without being "
        "acknowledged (its worker died each time, or it was returned) is dead-lettered "
        "instead of handed out again, and recorded as a rejected event (x-delivery-limit).",
    )

    worker_prefetch_multiplier: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Messages each pool process reserves ahead. Higher can keep busy workers "
        "fed; 1 lets an idle worker take what a busy one would otherwise hold.",
    )

    event_batch_size: int = Field(
        default=64,
        ge=1,
        le=500,
        description="At most this many events of one kind that wait for a busy worker's pool "
        "are applied together, in one transaction (workers/batching.py, services/batch.py). "
        "On Redis the worker lets them past the prefetch limit while they wait; on RabbitMQ "
        "they wait only within CLIENTFLOW_WORKER_PREFETCH_MULTIPLIER. 1 turns it off.",
    )

    task_events: bool = Field(
        default=False,
        description="Workers send Celery's task events and publishers the task-sent event "
        "(each a broker message per task). Off: `celery events` and Flower turn the worker "
        "side on themselves while they watch; ops status and the exporter need none.",
    )

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Worker log lines: Celery's text, or one JSON object per line carrying "
        "task_name, task_id and event_id.",
    )

    @model_validator(mode="after")
    def _visibility_above_backoff(self) -> Settings:
        if self.redis_visibility_timeout <= self.retry_backoff_max:
            raise ValueError(
                "redis_visibility_timeout must exceed retry_backoff_max, or a message waiting "
                "for its retry is handed to a second worker"
            )
        if self.email_redeliver_after_seconds <= self.redis_visibility_timeout:
            raise ValueError(
                "email_redeliver_after_seconds must exceed redis_visibility_timeout, or every "
                "email held by a dead worker is staged again before Redis hands it back"
            )
        if self.task_time_limit and self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                "task_soft_time_limit must be below task_time_limit, or the task is killed "
                "before it is asked to stop"
            )
        secret = self.unsubscribe_secret.get_secret_value()
        if secret and len(secret) < UNSUBSCRIBE_SECRET_MIN_CHARS:
            raise ValueError(
                f"unsubscribe_secret must be at least {UNSUBSCRIBE_SECRET_MIN_CHARS} characters: "
                "anyone who can guess it can unsubscribe anyone"
            )
        if self.unsubscribe_url and not secret:
            raise ValueError("unsubscribe_url needs unsubscribe_secret to sign its tokens")
        window = self.processed_events_keep_days * 86400
        if window and window <= self.redis_visibility_timeout:
            raise ValueError(
                "processed_events_keep_days must exceed redis_visibility_timeout, or a message "
                "Redis hands back after a worker died could be applied twice"
            )
        return self

    @property
    def company(self) -> Company:
        """Who every email comes from, as the templates show it."""
        return Company(
            name=self.company_name,
            address_lines=self.company_address,
            logo_url=self.company_logo_url,
            client_area_url=self.client_area_url,
            invoice_url=self.invoice_url,
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'clientflow.db'}"

    @property
    def effective_mail_dir(self) -> Path:
        return self.mail_dir or self.data_dir / "mail"

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
