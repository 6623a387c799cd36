"""Settings read from CLIENTFLOW_* environment variables; the defaults are the embedded mode.

With nothing set, everything lives under ./var: SQLite for data, kombu's filesystem transport
as the broker and .eml files instead of SMTP, so the demo needs no server at all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
