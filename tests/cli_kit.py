"""The `clientflow` command in process (Typer's CliRunner), on the test's database.

Much faster than a subprocess (tests/test_cli.py: about 2 s of imports per run). The
process's cached resources are pointed at the test's own instead: runtime.session_factory at
the rolled-back sessions of the `session_factory` fixture, runtime.publish at the `publisher`
fixture (it records what would reach the broker), and the settings re-read from an
environment holding only the mail settings given here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Publisher
from typer.testing import CliRunner

from models.settings import get_settings
from services.db import SessionFactory
from tasks import runtime
from workers.cli import app
from workers.cli import emails as emails_cli
from workers.cli.common import console

MAIL_FROM = "Test Hosting Billing <billing@test-hosting.example>"
REPLY_TO = "support@test-hosting.example"


class InProcessCli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> Any:
        """Run `clientflow ARGS`; fails unless it exits with `code`. Returns click's Result."""
        # Wide, so a table row stays on one line (Rich reads COLUMNS on every print).
        result = self.runner.invoke(app, list(args), env={"COLUMNS": "250"})
        if result.exit_code != code:
            raise AssertionError(
                f"clientflow {' '.join(args)} exited {result.exit_code}, not {code}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
                + (f"\n{result.exception!r}" if result.exception else "")
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def error(self, *args: str, code: int) -> str:
        """The one line a refused command writes on stderr (nothing on stdout)."""
        result = self(*args, code=code)
        assert result.stdout == "", result.stdout
        (line,) = result.stderr.splitlines()
        assert line.startswith("clientflow: "), line
        return str(line)


def cli_fixture() -> Any:
    """Make the `cli` fixture: `cli = cli_fixture()` at module level."""

    @pytest.fixture(name="cli")
    def make(
        session_factory: SessionFactory, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[InProcessCli]:
        for name in [name for name in os.environ if name.startswith("CLIENTFLOW_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("CLIENTFLOW_MAIL_FROM", MAIL_FROM)
        monkeypatch.setenv("CLIENTFLOW_REPLY_TO", REPLY_TO)
        get_settings.cache_clear()
        monkeypatch.setattr(runtime, "session_factory", lambda: session_factory)
        monkeypatch.setattr(runtime, "publish", publisher)
        # The publisher stands in for the broker, so there is no broker to check.
        monkeypatch.setattr(emails_cli, "require_broker", lambda: None)
        # Wide, so a table row stays on one line: set on the console itself, as its width
        # from COLUMNS is not what it uses in every runner (under pytest-xdist it is not).
        monkeypatch.setattr(console, "_width", 250)
        yield InProcessCli()
        get_settings.cache_clear()  # the next reader sees the environment as it was

    return make
