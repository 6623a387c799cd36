"""Settings read from CLIENTFLOW_* environment variables; the defaults are the embedded mode.

With nothing set, everything lives under ./var: SQLite for data, kombu's filesystem transport
as the broker and .eml files instead of SMTP, so the demo needs no server at all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    company_name: str = Field(default="Clientflow Hosting", description="Signature in emails.")
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
    redis_restore_interval: int = Field(
        default=60, description="Seconds between a worker's scans for such messages."
    )
    outbox_relay_seconds: float = Field(
        default=30.0, description="Beat runs the outbox relay this often."
    )
    outbox_min_age_seconds: float = Field(
        default=10.0, description="The relay leaves outbox rows younger than this alone."
    )
    sending_lease_seconds: float = Field(
        default=300.0,
        description="An email claimed for sending longer than this is taken as abandoned "
        "(its worker died) and requeued by the relay.",
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
        return self

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
