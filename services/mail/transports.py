"""Where composed emails go: a real SMTP server (one connection per batch) or .eml files."""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from email.message import Message as MimeMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from services.mail.smtp_pipelining import Envelope, Pipeline, can_pipeline


class MailConnection(Protocol):
    # The envelope is given, not read back from the To and From headers: parsing them was a
    # few percent of delivering an email, and the caller has both addresses at hand.
    # `meanwhile`, if given, is called once during the send, while the server takes the
    # message where the connection can tell (smtp_pipelining.Pipeline), else after.
    # `then`, if given, is the email the caller sends next on this connection (and it must):
    # a connection that can writes its envelope ahead, with this email.
    def send(
        self,
        message: MimeMessage,
        sender: str,
        recipients: Sequence[str],
        meanwhile: Callable[[], object] | None = None,
        then: Envelope | None = None,
    ) -> None: ...


class MailTransport(Protocol):
    def connect(self) -> AbstractContextManager[MailConnection]: ...


class SmtpConnection:
    def __init__(self, smtp: smtplib.SMTP) -> None:
        self._smtp = smtp
        # The server hung up or said it is closing (421): not a connection to keep.
        self.broken = False
        self._pipelined: bool | None = None  # known after the connection's EHLO
        self._pipeline = Pipeline(smtp)

    @property
    def reusable(self) -> bool:
        """Not broken, and not waiting for the content of an email whose envelope was
        written ahead (a caller that did not send it): a connection to keep."""
        return not self.broken and not self._pipeline.ahead

    def send(
        self,
        message: MimeMessage,
        sender: str,
        recipients: Sequence[str],
        meanwhile: Callable[[], object] | None = None,
        then: Envelope | None = None,
    ) -> None:
        try:
            if self._pipelined is None:
                self._pipelined = can_pipeline(self._smtp)
            if self._pipelined:
                self._pipeline.send(message, sender, recipients, meanwhile, then)
                return
            self._smtp.send_message(message, sender, list(recipients))
        except (smtplib.SMTPServerDisconnected, OSError):
            self.broken = True
            raise
        except smtplib.SMTPResponseException as exc:
            self.broken = exc.smtp_code == 421
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            self.broken = any(code == 421 for code, _ in exc.recipients.values())
            raise
        if meanwhile is not None:
            meanwhile()


# A kept connection idle longer than this is asked NOOP before it is used again: servers
# drop idle clients (RFC 5321 suggests 5 minutes), and a stale connection found only by the
# first send would cost that message an attempt.
CHECK_IDLE_AFTER_SECONDS = 10.0


class SmtpTransport:
    """smtp://[user:pass@]host[:port][?starttls=true] or smtps://... for implicit TLS.

    One connection is kept open between batches (connect, EHLO, STARTTLS, AUTH and QUIT cost
    more round trips than a short batch's messages), per transport object: each worker
    process has its own (tasks/runtime.py). A batch that ends in an exception closes it.
    """

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
        # The kept connection and when it was last used; a lock because --pool threads
        # shares one transport between threads (each takes the connection or opens its own).
        self._kept: smtplib.SMTP | None = None
        self._kept_at = 0.0
        self._lock = threading.Lock()

    @contextmanager
    def connect(self) -> Iterator[MailConnection]:
        smtp = self._take_kept() or self._open()
        connection = SmtpConnection(smtp)
        try:
            yield connection
        except BaseException:
            _close(smtp)
            raise
        if not connection.reusable:
            _close(smtp)
        else:
            self._keep(smtp)

    def close(self) -> None:
        """Say QUIT on the kept connection (a worker process shutting down)."""
        with self._lock:
            smtp, self._kept = self._kept, None
        if smtp is not None:
            _quit(smtp)

    def _open(self) -> smtplib.SMTP:
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
        except BaseException:
            _close(smtp)
            raise
        return smtp

    def _take_kept(self) -> smtplib.SMTP | None:
        with self._lock:
            smtp, self._kept = self._kept, None
            idle = time.monotonic() - self._kept_at
        if smtp is None or idle < CHECK_IDLE_AFTER_SECONDS:
            return smtp
        try:
            if smtp.noop()[0] == 250:
                return smtp
        except (smtplib.SMTPException, OSError):
            pass
        _close(smtp)
        return None

    def _keep(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            spare, self._kept, self._kept_at = self._kept, smtp, time.monotonic()
        if spare is not None:  # another thread kept one meanwhile: one is enough
            _quit(spare)


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _close(smtp: smtplib.SMTP) -> None:
    """After a failure the conversation's state is unknown: drop the socket, no QUIT."""
    smtp.close()


_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


class FileConnection:
    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def send(
        self,
        message: MimeMessage,
        sender: str,
        recipients: Sequence[str],
        meanwhile: Callable[[], object] | None = None,
        then: Envelope | None = None,
    ) -> None:
        address = recipients[0] if recipients else ""
        key = str(message["X-Clientflow-Idempotency-Key"])[:10]
        name = _UNSAFE.sub("_", f"{message['X-Clientflow-Template']}__{address}__{key}.eml")
        target = self._folder / name
        partial = target.with_suffix(".part")
        partial.write_bytes(message.as_bytes())
        # Rename is atomic: a reader never sees half an email.
        os.replace(partial, target)
        if meanwhile is not None:
            meanwhile()


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
