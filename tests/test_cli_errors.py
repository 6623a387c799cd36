"""Every `clientflow` command answers what a person can fix with one line and exit status 2.

A database or broker that does not answer, a PostgreSQL role or database that does not exist,
a CLIENTFLOW_* setting pydantic refuses, a port in use, a bad option: one line on stderr saying
what is wrong and what to do, never a traceback, never a password. And `ops status` exits 1
when what it checks is unhealthy.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import environ_without_settings, free_port
from test_cli import CLI, run_cli
from typer.testing import CliRunner
from worker_process import WorkerProcess, worker_fixture

from services.dead_letters import record_dead_letter
from workers import migrate
from workers.cli import app
from workers.ops.snapshot import Snapshot

PASSWORD = "s3cret-pw"
DEAD_BROKER = "redis://127.0.0.1:1/0"

# Commands that read the database, with what they need besides it.
DATABASE_COMMANDS = [
    ("rejected", "list"),
    ("rejected", "list", "--json"),
    ("emails", "list"),
    ("emails", "show", "1"),
    ("clients", "show", "C1"),
    ("dlq", "list"),
    ("dlq", "show", "1"),
    ("dlq", "purge", "--yes"),
    ("outbox", "status"),
    ("db", "upgrade"),
    ("db", "current"),
    ("invoices", "run"),
]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The whole output, checked to be one line on stderr and exit 2; returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert result.stdout == "", output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("clientflow: "), output
    return lines[0]


@pytest.fixture
def sqlite_database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db' / 'clientflow.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def missing_role_url(postgres_admin_url: str) -> str:
    """The admin server, as a role that does not exist, with a password to keep secret."""
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    rest = postgres_admin_url.split("@", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+psycopg://{role}:{PASSWORD}@{rest}/clientflow"


# --- the database -------------------------------------------------------------------------


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_a_database_on_a_closed_port(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:{free_port()}/clientflow"
    line = one_line(run_cli(tmp_path, *command, check=False, database_url=url))

    assert "cannot reach the database at postgresql+psycopg://app:***@127.0.0.1:" in line
    assert "Connection refused" in line
    assert "start the database" in line
    assert PASSWORD not in line


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_a_role_that_does_not_exist(
    tmp_path: Path, missing_role_url: str, command: tuple[str, ...]
) -> None:
    line = one_line(run_cli(tmp_path, *command, check=False, database_url=missing_role_url))

    role = missing_role_url.split("//", 1)[1].split(":", 1)[0]
    assert f'(role "{role}" does not exist)' in line
    assert "create the role and database, then run `clientflow db upgrade`" in line
    assert f"{role}:***@" in line
    assert PASSWORD not in line


def test_a_database_that_does_not_exist(tmp_path: Path, postgres_admin_url: str) -> None:
    url = postgres_admin_url.rsplit("/", 1)[0] + f"/missing_{uuid.uuid4().hex[:8]}"
    line = one_line(run_cli(tmp_path, "db", "upgrade", check=False, database_url=url))

    assert "does not exist" in line
    assert "create the role and database" in line


def test_a_database_never_migrated(tmp_path: Path, postgres_admin_url: str) -> None:
    # The admin database has none of our tables.
    line = one_line(
        run_cli(tmp_path, "rejected", "list", check=False, database_url=postgres_admin_url)
    )

    assert "is not migrated" in line
    assert 'relation "rejected_events" does not exist' in line
    assert "run `clientflow db upgrade`" in line


def test_a_sqlite_file_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'clientflow.db'}"
    line = one_line(run_cli(tmp_path, "emails", "list", check=False, database_url=url))

    assert "unable to open database file" in line


def test_a_database_url_that_is_not_one(tmp_path: Path) -> None:
    line = one_line(run_cli(tmp_path, "dlq", "list", check=False, database_url="not a url"))

    assert "CLIENTFLOW_DATABASE_URL is not a database URL" in line


# --- the broker ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("dlq", "replay", "--all"), ("outbox", "relay"), ("invoices", "run")],
    ids=" ".join,
)
def test_a_broker_that_does_not_answer(
    tmp_path: Path, sqlite_database: str, command: tuple[str, ...]
) -> None:
    broker = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    result = run_cli(
        tmp_path, *command, check=False, database_url=sqlite_database, broker_url=broker
    )
    line = one_line(result)

    assert "cannot reach the broker at redis://:**@127.0.0.1:1/0" in line
    assert "Connection refused" in line
    assert PASSWORD not in line


def test_a_broker_url_of_no_known_transport(tmp_path: Path, sqlite_database: str) -> None:
    result = run_cli(
        tmp_path, "outbox", "relay", check=False, database_url=sqlite_database, broker_url="x://"
    )

    assert "names no known broker" in one_line(result)


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"invoice_batch_size": "0"}, "CLIENTFLOW_INVOICE_BATCH_SIZE='0'"),
        ({"log_format": "xml"}, "CLIENTFLOW_LOG_FORMAT='xml': Input should be 'text' or 'json'"),
        ({"invoice_overdue_days": "14,7,1"}, "must be three increasing numbers of days"),
        ({"invoice_run_cron": "daily"}, "must have five fields"),
        ({"redis_visibility_timeout": "10"}, "redis_visibility_timeout must exceed"),
        ({"smtp_timeout": "soon"}, "CLIENTFLOW_SMTP_TIMEOUT='soon'"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_a_setting_pydantic_refuses(
    tmp_path: Path, settings: dict[str, str], expected: str
) -> None:
    line = one_line(run_cli(tmp_path, "rejected", "list", check=False, **settings))

    assert line.startswith("clientflow: bad setting: ")
    assert expected in line
    assert "fix or unset it" in line


@pytest.mark.parametrize(
    "command",
    [
        ("db", "upgrade"),
        ("outbox", "relay"),
        ("invoices", "run"),
        ("ops", "status"),
        ("ops", "status", "--json"),
        ("ops", "ping"),
        ("ops", "exporter", "--port", "1"),
    ],
    ids=" ".join,
)
def test_every_command_answers_a_bad_setting(tmp_path: Path, command: tuple[str, ...]) -> None:
    line = one_line(run_cli(tmp_path, *command, check=False, invoice_batch_size="0"))

    assert "bad setting: CLIENTFLOW_INVOICE_BATCH_SIZE='0'" in line


def test_several_bad_settings_on_one_line(tmp_path: Path) -> None:
    line = one_line(
        run_cli(tmp_path, "emails", "list", check=False, invoice_batch_size="0", log_format="x")
    )

    assert "CLIENTFLOW_INVOICE_BATCH_SIZE" in line
    assert "CLIENTFLOW_LOG_FORMAT" in line


# --- the exporter's address ---------------------------------------------------------------


def test_the_exporter_on_a_port_in_use(tmp_path: Path, sqlite_database: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            tmp_path,
            "ops",
            "exporter",
            "--port",
            str(port),
            check=False,
            database_url=sqlite_database,
        )
    line = one_line(result)

    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in line
    assert "--port" in line


def test_the_exporter_on_an_address_not_of_this_host(tmp_path: Path, sqlite_database: str) -> None:
    result = run_cli(
        tmp_path,
        "ops",
        "exporter",
        "--port",
        str(free_port()),
        "--host",
        "no-such-host.invalid",
        check=False,
        database_url=sqlite_database,
    )

    assert "cannot listen on no-such-host.invalid:" in one_line(result)


@pytest.fixture
def exporter_process(tmp_path: Path, sqlite_database: str) -> Iterator[tuple[int, Path]]:
    """`clientflow ops exporter --port N` with no --host; yields N and its output file."""
    port = free_port()
    env = environ_without_settings()
    env.update(CLIENTFLOW_DATABASE_URL=sqlite_database, CLIENTFLOW_DATA_DIR=str(tmp_path))
    output = tmp_path / "exporter.out"
    with output.open("w") as out:
        process = subprocess.Popen(
            [*CLI, "ops", "exporter", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "serving" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)
        yield port, output
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_exporter_listens_on_loopback_by_default(exporter_process: tuple[int, Path]) -> None:
    port, output = exporter_process

    assert f"serving Prometheus metrics on http://127.0.0.1:{port}/metrics" in output.read_text()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    # Not on the other addresses of this host.
    outward = _an_address_other_than_loopback()
    if outward is None:
        pytest.skip("this host has no address besides loopback")
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((outward, port), timeout=5),
    ):
        pass


def _an_address_other_than_loopback() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, a route is chosen
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_exporter_help_documents_host() -> None:
    result = CliRunner().invoke(app, ["ops", "exporter", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    assert "--host" in result.output
    assert "[default: 127.0.0.1]" in result.output


# --- bad options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("rejected", "list", "--bogus"), "No such option: --bogus"),
        (("rejected", "list", "--limit", "many"), "Invalid value for '--limit'"),
        (("dlq", "replay"), "give one ID or --all"),
        (("dlq", "show", "first"), "Invalid value"),
        (("schema", "clients.remove"), "unknown event 'clients.remove'"),
        (("invoices", "run", "--date", "tomorrow"), "'tomorrow' is not a date like 2026-01-31"),
        (("nonsense",), "No such command 'nonsense'"),
        (("ops", "exporter", "--port", "high"), "Invalid value for '--port'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_a_bad_option_or_argument(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    line = one_line(run_cli(tmp_path, *args, check=False))

    assert expected in line
    assert line.endswith("--help`)")
    assert "(see `clientflow " in line


def test_a_bad_option_in_process_with_clirunner() -> None:
    result = CliRunner().invoke(app, ["dlq", "list", "--bogus"])

    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "clientflow: No such option: --bogus (see `clientflow dlq list --help`)"
    ]


# --- `ops status` exits 1 when unhealthy --------------------------------------------------


def test_status_with_the_broker_down_exits_1(tmp_path: Path, sqlite_database: str) -> None:
    result = run_cli(
        tmp_path,
        "ops",
        "status",
        check=False,
        database_url=sqlite_database,
        broker_url=DEAD_BROKER,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "problem: broker: Error 111" in result.stdout
    assert "unhealthy: broker: " in result.stdout


def test_status_with_the_database_down_exits_1_and_still_prints_its_json(
    tmp_path: Path, missing_role_url: str
) -> None:
    result = run_cli(
        tmp_path, "ops", "status", "--json", check=False, database_url=missing_role_url
    )

    assert result.returncode == 1, result.stdout + result.stderr
    snapshot = Snapshot.model_validate_json(result.stdout)
    (problem,) = snapshot.problems
    assert problem.startswith("database: ")
    assert "does not exist" in problem
    assert PASSWORD not in result.stdout + result.stderr


def test_status_with_no_worker_online_exits_1(tmp_path: Path, sqlite_database: str) -> None:
    # The embedded filesystem broker answers; no worker does.
    human = run_cli(tmp_path, "ops", "status", check=False, database_url=sqlite_database)
    as_json = run_cli(
        tmp_path, "ops", "status", "--json", check=False, database_url=sqlite_database
    )

    assert human.returncode == 1, human.stdout + human.stderr
    assert "Workers: none online" in human.stdout
    assert "unhealthy: no worker online" in human.stdout
    assert as_json.returncode == 1
    snapshot = json.loads(as_json.stdout)
    assert (snapshot["workers"], snapshot["problems"]) == ([], [])


def test_status_on_an_unmigrated_database_exits_1(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "ops", "status", "--json", check=False)

    assert result.returncode == 1
    (problem,) = Snapshot.model_validate_json(result.stdout).problems
    assert "no such table" in problem


worker = worker_fixture()


@pytest.mark.worker
def test_status_exits_0_when_healthy_and_1_with_a_dead_letter(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    settings = {"database_url": worker.database_url, "broker_url": worker.broker_url}

    healthy = run_cli(tmp_path, "ops", "status", check=False, **settings)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.splitlines()[-1] == "healthy"
    assert run_cli(tmp_path, "ops", "status", "--json", check=False, **settings).returncode == 0

    record_dead_letter(
        worker.sessions, task_name="clients.add", task_id=None, kwargs={}, errors=[], reason="x"
    )
    buried = run_cli(tmp_path, "ops", "status", check=False, **settings)
    assert buried.returncode == 1
    assert "unhealthy: 1 dead letter(s) not replayed" in buried.stdout
