"""`clientflow demo`: the scripted story through a real worker with no servers at all."""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import pytest
from servers import environ_without_settings

from workers.cli.demo_story import story

pytestmark = pytest.mark.slow

SUMMARY = re.compile(
    r"(\d+) events applied, (\d+) rejected, (\d+) duplicate ignored; "
    r"(\d+) emails sent, (\d+) \.eml files"
)


def clientflow_command() -> list[str]:
    """The installed console script, as a user runs it (or its entry point if missing)."""
    script = Path(sys.executable).parent / "clientflow"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from workers.cli import main; main()"]


def read_mail(folder: Path) -> list[EmailMessage]:
    messages = []
    for path in sorted(folder.glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def applied_order(database: Path) -> list[str]:
    """Event ids in the order the worker applied them, for failure messages."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("select event_id from processed_events order by processed_at")
        return [row[0] for row in rows]


@dataclass(frozen=True)
class DemoRun:
    folder: Path
    result: subprocess.CompletedProcess[str]
    applied_order: list[str]

    @property
    def context(self) -> str:
        """What a failure message needs: the order events were applied in, and the output."""
        return f"events applied in this order: {self.applied_order}\nstdout:\n{self.result.stdout}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`clientflow demo --dir <tmp>/demo`, run once, from an empty working directory."""
    cwd = tmp_path_factory.mktemp("demo-cwd")
    folder = cwd / "demo"
    env = environ_without_settings()
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [*clientflow_command(), "demo", "--dir", str(folder)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    log = folder / "worker.log"
    assert result.returncode == 0, (
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}\n"
        f"worker log:\n{log.read_text()[-3000:] if log.exists() else '(none)'}"
    )
    return DemoRun(folder, result, applied_order(folder / "clientflow.db"))


def test_demo_summary_counts_applied_rejected_and_sent(demo: DemoRun) -> None:
    match = SUMMARY.search(demo.result.stdout)
    assert match is not None, demo.context
    applied, rejected, duplicates, sent, files = map(int, match.groups())
    # 16 published, 15 distinct ids: demo-010 and demo-011 are refused, demo-008 comes twice.
    assert (applied, rejected, duplicates) == (13, 2, 1), demo.context
    # Welcome to Ada; product: Ada + tech; general: Ada + accounts + augustus;
    # domain: Ada + tech; the last general: Ada + accounts (augustus was deleted by then).
    assert (sent, files) == (10, 10), demo.context
    assert "Duplicate Email Address" in demo.result.stdout
    assert "duplicate: ignored" in demo.result.stdout


def test_demo_writes_every_email_as_a_multipart_eml_file(demo: DemoRun) -> None:
    messages = read_mail(demo.folder / "mail")

    assert len(messages) == 10, demo.context
    for message in messages:
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert message["Subject"]
        assert message["X-Clientflow-Event-Id"].startswith("demo-")
    assert not list((demo.folder / "mail").glob("*.part"))


def test_demo_routes_mail_by_contact_categories(demo: DemoRun) -> None:
    received: Counter[tuple[str, str]] = Counter()
    events_to: dict[str, list[str]] = {}
    for message in read_mail(demo.folder / "mail"):
        ((_, address),) = getaddresses([str(message["To"])])
        received[(address, str(message["X-Clientflow-Template"]))] += 1
        events_to.setdefault(address, []).append(str(message["X-Clientflow-Event-Id"]))

    assert received[("ada@analytical.example", "client_signup")] == 1
    # Augustus gets the announcement sent while he was a contact, not the one after.
    assert received[("augustus@analytical.example", "general_announcement")] == 1, demo.context
    assert events_to["augustus@analytical.example"] == ["demo-008"], demo.context
    # A contact with no category ticked receives nothing.
    assert "michael@analytical.example" not in events_to
    # Grace was added with send_welcome false, and no notification was for her.
    assert "grace@cobol.example" not in events_to
    assert sorted(events_to["accounts@analytical.example"]) == ["demo-008", "demo-015"]
    assert sorted(events_to["tech@analytical.example"]) == ["demo-007", "demo-013"]


def test_demo_applies_the_story_in_publish_order(demo: DemoRun) -> None:
    distinct = list(dict.fromkeys(kwargs["event_id"] for _, kwargs in story()))
    refused = {"demo-010", "demo-011"}

    assert demo.applied_order == [e for e in distinct if e not in refused]


def test_loading_the_demo_creates_nothing_in_the_working_directory(tmp_path: Path) -> None:
    env = environ_without_settings()
    subprocess.run(
        [sys.executable, "-c", "import workers.cli, workers.cli.demo"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=60,
    )

    assert list(tmp_path.iterdir()) == []


def test_the_story_publishes_what_the_demo_summary_counts() -> None:
    events = story()
    ids = [kwargs["event_id"] for _, kwargs in events]
    assert len(events) == 16
    assert len(set(ids)) == 15
