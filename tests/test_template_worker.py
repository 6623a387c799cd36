"""Through a real worker: a French client's welcome email arrives in French at the SMTP sink,
an English client's in the operator's own words (CLIENTFLOW_TEMPLATE_DIR)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import payloads
import pytest
from smtp_sink import SmtpSink
from worker_process import WorkerProcess

pytestmark = pytest.mark.worker


def test_a_french_clients_welcome_email_arrives_in_french(
    redis_url: str, new_postgres_database: Callable[[], str], smtp: SmtpSink, tmp_path: Path
) -> None:
    override = tmp_path / "templates" / "client_signup"
    override.mkdir(parents=True)
    (override / "subject.txt").write_text("Your new account at {{ company_name }}")
    worker = WorkerProcess(
        broker_url=redis_url,
        database_url=new_postgres_database(),
        smtp_url=smtp.url,
        workdir=tmp_path / "worker",
        extra_settings={"template_dir": str(tmp_path / "templates"), "company_name": "Nuage"},
    )
    try:
        worker.start()
        french = payloads.client("C1", language="french", email="amelie@example.fr")
        english = payloads.client("C2", email="ada@example.com")
        worker.publish("clients.add", french)
        worker.publish("clients.add", english)
        worker.wait_applied(french["event_id"], english["event_id"])
        received = {m.rcpt_tos[0]: m.message for m in smtp.wait_for(2)}
    finally:
        worker.close()

    welcome = received["amelie@example.fr"]
    assert welcome["Subject"] == "Bienvenue chez Nuage"
    text = welcome.get_body(("plain",))
    html = welcome.get_body(("html",))
    assert text is not None
    assert html is not None
    lines = text.get_content().splitlines()  # CRLF on the wire
    assert lines[:3] == [
        "Bonjour Ada Lovelace,",
        "",
        "Merci pour votre inscription chez Nuage. Votre compte est prêt.",
    ]
    assert lines[-2:] == ["Cordialement,", "Nuage"]
    assert '<html lang="fr">' in html.get_content()
    # No French subject in the operator's folder: theirs is the English one only.
    assert received["ada@example.com"]["Subject"] == "Your new account at Nuage"
    assert received["ada@example.com"].get_body(("plain",)) is not None
