"""`ops status` and `ops ping` when a part of the system is down, and the documented --json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from servers import free_port
from test_cli import run_cli

from models.base import utcnow
from models.engine import make_engine
from models.settings import Settings
from services.db import make_session_factory
from workers import migrate
from workers.app import create_app
from workers.ops.ping import on_host
from workers.ops.render import render
from workers.ops.snapshot import Snapshot
from workers.ops.status import build_snapshot


def test_status_with_the_broker_down_still_shows_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'clientflow.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    app = create_app(Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        snapshot = build_snapshot(app, make_session_factory(engine))
    finally:
        app.close()
        engine.dispose()
    assert [p.split(":")[0] for p in snapshot.problems] == ["broker"]
    assert snapshot.workers is None
    assert {q.name: q.depth for q in snapshot.queues} == {
        "celery": None,
        "emails": None,
        "events": None,
        "invoice_run": None,
    }
    assert snapshot.emails is not None
    assert snapshot.tasks_last_hour == []


def test_status_on_an_unmigrated_database_names_the_problem(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "ops", "status", "--json", check=False, data_dir=str(tmp_path / "var")
    )
    assert result.returncode == 1  # unhealthy: the database is not migrated
    snapshot = Snapshot.model_validate_json(result.stdout)
    (problem,) = snapshot.problems
    assert problem.startswith("database: ")
    assert "no such table" in problem
    assert snapshot.emails is None
    assert snapshot.dead_letters is None
    # The embedded filesystem broker still answers: its folder has no message in it.
    assert {q.name: q.depth for q in snapshot.queues} == {
        "celery": 0,
        "emails": 0,
        "events": 0,
        "invoice_run": 0,
    }
    assert all(q.unacked is None for q in snapshot.queues)


def test_ping_fails_when_the_broker_or_the_database_is_down(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    dead_postgres = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/clientflow"
    result = run_cli(
        tmp_path, "ops", "ping", check=False, broker_url=dead_redis, database_url=dead_postgres
    )
    assert result.returncode == 1
    assert "FAIL broker" in result.stdout
    assert "FAIL database" in result.stdout
    assert "FAIL workers: not asked" in result.stdout


def test_local_means_the_workers_named_after_this_host() -> None:
    names = ["celery@web-1", "emails@web-1", "celery@web-12", "celery@other"]
    assert on_host(names, "web-1") == ["celery@web-1", "emails@web-1"]
    assert on_host(names, "nowhere") == []


# --- the documented --json schema ----------------------------------------------------------


def documented_fields(repo_root: Path) -> list[str]:
    """The first column of the operations doc's field table under "ops status --json"."""
    doc = (repo_root / "docs" / "operations.md").read_text()
    section = doc.split("### `clientflow ops status --json`", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


def model_fields(schema: dict[str, Any], node: dict[str, Any], prefix: str = "") -> list[str]:
    """Every field path of the JSON Schema: `a.b`, `list[].field`; a free-form object is a leaf."""
    fields: list[str] = []
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        fields.append(path)
        fields.extend(model_fields(schema, _resolve(schema, prop), f"{path}."))
    if "items" in node:
        item = _resolve(schema, node["items"])
        fields.extend(model_fields(schema, item, prefix.removesuffix(".") + "[]."))
    return fields


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    for option in prop.get("anyOf", [prop]):
        if "$ref" in option:
            resolved: dict[str, Any] = schema["$defs"][option["$ref"].rsplit("/", 1)[1]]
            return resolved
        if option.get("type") == "array":
            return {"items": option["items"]}
    return {}


def test_the_readme_documents_exactly_the_json_fields(repo_root: Path) -> None:
    schema = Snapshot.model_json_schema()
    assert documented_fields(repo_root) == model_fields(schema, schema)


def readme_example(repo_root: Path) -> str:
    doc = (repo_root / "docs" / "operations.md").read_text()
    section = doc.split("### `clientflow ops status --json`", 1)[1]
    match = re.search(r"```json\n(.*?)```", section, re.S)
    assert match, "docs/operations.md lost its ops status --json example"
    return match.group(1)


def test_the_readme_example_is_valid_output(repo_root: Path) -> None:
    text = readme_example(repo_root)
    example = Snapshot.model_validate_json(text)
    assert json.loads(example.model_dump_json()) == json.loads(text)
    assert example.taken_at < utcnow()


def test_the_tables_show_a_runs_breakdowns_by_their_non_zero_parts(repo_root: Path) -> None:
    example = Snapshot.model_validate_json(readme_example(repo_root))
    console = Console(width=400, record=True, color_system=None)
    console.print(render(example))
    text = console.export_text()
    assert (
        "generated 118, notices invoice_created 118 / payment_reminder 40 / overdue_first 6, "
        "skipped 0, no_recipient 1, emails 163, batches generate 1 / notify 1"
    ) in text
    assert "{" not in text
