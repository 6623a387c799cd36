"""Checks that the test-support servers really start, answer, fail on demand and clean up."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
from servers import (
    PostgresServer,
    RedisServer,
    ServerUnavailable,
    create_database,
    drop_database,
    find_or_start_redis,
    free_port,
    postgres_answers,
    postgres_bindir,
    redis_answers,
)
from smtp_sink import SmtpSink


def test_redis_server_restarts_on_the_same_port() -> None:
    with RedisServer() as server:
        port = server.port
        assert redis_answers(server.url)

        server.stop()
        assert not redis_answers(server.url)

        server.start()
        assert server.port == port
        assert redis_answers(server.url)

        server.kill()
        assert not redis_answers(server.url)
        server.start()
        assert redis_answers(server.url)
    assert not redis_answers(server.url)


def test_find_or_start_redis_reuses_or_starts() -> None:
    with RedisServer() as running:
        assert find_or_start_redis(running.url) == (running.url, None)

    url, started = find_or_start_redis(f"redis://127.0.0.1:{free_port()}/0")
    assert started is not None
    try:
        assert url == started.url
        assert redis_answers(url)
    finally:
        started.stop()


def test_missing_redis_binary_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(ServerUnavailable) as info:
        find_or_start_redis(url)
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install redis-server" in message
    assert "CLIENTFLOW_TEST_REDIS_URL" in message
    assert "secret" not in message


def test_postgres_server_runs_queries_and_databases() -> None:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb) are not installed")
    with PostgresServer() as server:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)

        name = f"clientflow_test_{uuid.uuid4().hex[:8]}"
        url = create_database(server.url, name)
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"
        assert postgres_answers(url)

        # An open session must not stop the drop.
        session = psycopg.connect(url.replace("+psycopg", ""))
        try:
            drop_database(server.url, name)
        finally:
            session.close()
        with psycopg.connect(server.url) as conn:
            row = conn.execute("select count(*) from pg_database where datname = %s", [name])
            assert row.fetchone() == (0,)
    assert not postgres_answers(server.url)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def _mail(to: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "billing@clientflow.test"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Your invoice is attached.")
    message.add_alternative("<p>Your invoice is attached.</p>", subtype="html")
    return message


def test_sink_receives_multipart_mail_over_one_connection(sink: SmtpSink) -> None:
    assert sink.url == f"smtp://127.0.0.1:{sink.port}"
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.send_message(_mail("alice@example.test", "Invoice 1"))
        client.send_message(_mail("bob@example.test", "Invoice 2"))

    first, second = sink.wait_for(2)
    assert sink.connections == 1
    assert first.mail_from == "billing@clientflow.test"
    assert first.rcpt_tos == ["alice@example.test"]
    assert second.rcpt_tos == ["bob@example.test"]
    parsed = first.message
    assert parsed["Subject"] == "Invoice 1"
    assert parsed.get_content_type() == "multipart/alternative"
    html = parsed.get_body(("html",))
    assert html is not None
    assert "<p>Your invoice is attached.</p>" in html.get_content()

    # A connection that never says hello still counts.
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.noop()
    assert sink.connections == 2

    sink.clear()
    assert sink.messages == []
    assert sink.connections == 0


def test_sink_refuses_configured_recipients(sink: SmtpSink) -> None:
    sink.fail_rcpt["nobody@example.test"] = "550 5.1.1 No such user"
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            client.send_message(_mail("Nobody@Example.test", "Lost"))
        recipients = ["carol@example.test", "nobody@example.test"]
        client.send_message(_mail("carol@example.test", "Found"), to_addrs=recipients)

    assert info.value.recipients["Nobody@Example.test"][0] == 550
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == ["carol@example.test"]


def test_sink_fails_data_temporarily_then_accepts(sink: SmtpSink) -> None:
    sink.temp_fail_data = 1
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.send_message(_mail("dave@example.test", "Retry"))
        assert info.value.smtp_code == 451
        assert sink.messages == []
        client.send_message(_mail("dave@example.test", "Retry"))

    assert sink.temp_fail_data == 0
    assert [r.rcpt_tos for r in sink.wait_for(1)] == [["dave@example.test"]]


def test_wait_for_times_out_with_a_clear_message(sink: SmtpSink) -> None:
    with pytest.raises(AssertionError, match="expected at least 1 message"):
        sink.wait_for(1, timeout=0.2)
