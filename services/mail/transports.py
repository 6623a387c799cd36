"""Where composed emails go: a real SMTP server (one connection per batch) or .eml files."""

from __future__ import annotations

import os
import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from email.message import EmailMessage as MimeMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit


class MailConnection(Protocol):
    def send(self, message: MimeMessage) -> None: ...


class MailTransport(Protocol):
    def connect(self) -> AbstractContextManager[MailConnection]: ...


class SmtpConnection:
    def __init__(self, smtp: smtplib.SMTP) -> None:
        self._smtp = smtp

    def send(self, message: MimeMessage) -> None:
        self._smtp.send_message(message)


class SmtpTransport:
    """smtp://[user:pass@]host[:port][?starttls=true] or smtps://... for implicit TLS."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"unsupported SMTP URL scheme {parts.scheme!r}")
        self.host = parts.hostname or "localhost"
        self.implicit_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        self.starttls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        self.timeout = timeout

    @contextmanager
    def connect(self) -> Iterator[MailConnection]:
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            yield SmtpConnection(smtp)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


class FileConnection:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def send(self, message: MimeMessage) -> None:
        address = parseaddr(str(message["To"]))[1]
        key = str(message["X-Clientflow-Idempotency-Key"])[:10]
        name = _UNSAFE.sub("_", f"{message['X-Clientflow-Template']}__{address}__{key}.eml")
        target = self._folder / name
        partial = target.with_suffix(".part")
        partial.write_bytes(message.as_bytes())
        # Rename is atomic: a reader never sees half an email.
        os.replace(partial, target)


class FileTransport:
    """The embedded default: each email becomes an .eml file any mail client can open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextmanager
    def connect(self) -> Iterator[MailConnection]:
        self.folder.mkdir(parents=True, exist_ok=True)
        yield FileConnection(self.folder)


def transport_for(smtp_url: str, mail_dir: Path, timeout: float = 30.0) -> MailTransport:
    if smtp_url:
        return SmtpTransport(smtp_url, timeout=timeout)
    return FileTransport(mail_dir)
