"""An in-process SMTP server that records what the code under test sends, with fault injection."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from servers import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class _CountingController(Controller):
    # aiosmtpd builds one SMTP protocol per accepted TCP connection, so the factory is
    # the one place that sees every connection, greeting or not.
    def __init__(self, sink: SmtpSink, port: int) -> None:
        super().__init__(sink, hostname=HOST, port=port, server_hostname="clientflow-sink")
        self._sink = sink

    def factory(self) -> SMTP:
        self._sink._connection_opened()
        return SMTP(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    """Accepts all mail on 127.0.0.1 and keeps it for assertions.

    fail_rcpt maps a lowercase recipient to the reply its RCPT gets; while
    temp_fail_data is above zero, each DATA is refused with a 451 and counts it down; while
    unavailable_reply is set (e.g. "421 4.3.2 Service not available"), every MAIL gets it;
    data_delay holds each DATA reply back that many seconds (wait_for_data() sees it start).
    It advertises PIPELINING, as Postfix and the benchmark's smtp-sink do, unless pipelining
    is set False (aiosmtpd takes pipelined commands either way: it reads line by line).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.fail_rcpt: dict[str, str] = {}
        self.temp_fail_data = 0
        self.unavailable_reply: str | None = None
        self.data_delay = 0.0
        self.pipelining = True
        # What DATA carried when temp_fail_data refused it: a retry can be compared with it.
        self.refused: list[Received] = []
        self._data_started = 0
        self._messages: list[Received] = []
        self._connections = 0
        self._changed = threading.Condition()
        self._controller: _CountingController | None = None

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    @property
    def connections(self) -> int:
        with self._changed:
            return self._connections

    @property
    def messages(self) -> list[Received]:
        with self._changed:
            return list(self._messages)

    def start(self) -> None:
        if self._controller is not None:
            return
        self._controller = _CountingController(self, self.port)
        self._controller.start()
        # Controller.start() opens a probe connection to check the server is up;
        # it is not one the code under test made.
        with self._changed:
            self._connections = 0

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        """Forget received mail and connections and switch fault injection off."""
        with self._changed:
            self._messages.clear()
            self._connections = 0
            self.fail_rcpt.clear()
            self.temp_fail_data = 0
            self.unavailable_reply = None
            self.data_delay = 0.0
            self.pipelining = True
            self._data_started = 0

    def wait_for_data(self, count: int = 1, timeout: float = 30.0) -> None:
        """Block until the server has been sent at least count messages (DATA received)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._data_started >= count, timeout):
                raise AssertionError(f"no DATA reached {self.url} within {timeout}s")

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until at least count messages arrived and return all of them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                got = [(m.mail_from, m.rcpt_tos) for m in self._messages]
                raise AssertionError(
                    f"expected at least {count} message(s) at {self.url} within {timeout}s,"
                    f" got {len(got)}: {got}"
                )
            return list(self._messages)

    def _connection_opened(self) -> None:
        with self._changed:
            self._connections += 1

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if not self.pipelining:
            return responses
        # Before the last line ("250 HELP"): only the last has a space after its code.
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.unavailable_reply is not None:
            return self.unavailable_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.fail_rcpt.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._changed:
            self._data_started += 1
            self._changed.notify_all()
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content or b"",
        )
        with self._changed:
            if self.temp_fail_data > 0:
                self.temp_fail_data -= 1
                self.refused.append(received)
                return "451 4.3.0 Try again later"
            self._messages.append(received)
            self._changed.notify_all()
        return "250 OK"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
