"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from workers.cli import app as cli
from workers.settings import Settings


def _compose(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return data


def test_runs_every_part_of_the_service(repo_root: Path) -> None:
    services = _compose(repo_root)["services"]
    assert {
        "redis",
        "postgres",
        "migrate",
        "worker",
        "beat",
        "mailpit",
        "flower",
        "exporter",
    } <= set(services)
    assert services["beat"]["command"][:4] == ["celery", "-A", "workers.app", "beat"]
    assert services["migrate"]["command"] == ["clientflow", "db", "upgrade"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "workers.app", "worker"]
    assert services["worker"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }


def test_environment_names_real_settings(repo_root: Path) -> None:
    services = _compose(repo_root)["services"]
    known = {f"CLIENTFLOW_{name.upper()}" for name in Settings.model_fields}
    for name in ("migrate", "worker", "beat", "flower", "exporter"):
        # Only ours: Flower's own options (FLOWER_*) are not clientflow settings.
        environment = {
            key: value
            for key, value in services[name]["environment"].items()
            if key.startswith("CLIENTFLOW_")
        }
        assert set(environment) <= known, set(environment) - known
        settings = Settings(
            **{k.removeprefix("CLIENTFLOW_").lower(): v for k, v in environment.items()}
        )
        assert settings.broker_url.startswith("redis://redis:")
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.smtp_url == "smtp://mailpit:1025"


def test_dockerfile_copies_every_package(repo_root: Path) -> None:
    dockerfile = (repo_root / "Dockerfile").read_text()
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert packages
    for package in packages:
        assert f"COPY {package} {package}" in dockerfile


def test_worker_healthcheck_and_exporter_are_real_clientflow_commands(repo_root: Path) -> None:
    services = _compose(repo_root)["services"]
    healthcheck = services["worker"]["healthcheck"]["test"]
    assert healthcheck == ["CMD", "clientflow", "ops", "ping", "--local"]
    exporter = services["exporter"]["command"]
    assert exporter[:3] == ["clientflow", "ops", "exporter"]
    assert services["exporter"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    for command in (healthcheck[1:], exporter):
        # --help still parses every option before it, so an unknown one fails here.
        result = CliRunner().invoke(cli, [*command[1:], "--help"])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("service", ["worker", "flower"])
def test_celery_services_use_our_app(repo_root: Path, service: str) -> None:
    command = _compose(repo_root)["services"][service]["command"]
    assert command[:3] == ["celery", "-A", "workers.app"]


def test_the_image_installs_flower(repo_root: Path) -> None:
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert any(
        dependency.startswith("flower")
        for dependency in pyproject["project"]["optional-dependencies"]["flower"]
    )
    assert "-c constraints.txt '.[flower]'" in (repo_root / "Dockerfile").read_text()


def test_flower_is_started_with_basic_auth(repo_root: Path) -> None:
    # Without authentication Flower 2 answers its API with 401 (and the UI is open to anyone).
    environment = _compose(repo_root)["services"]["flower"]["environment"]
    assert environment["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:-")
    assert environment["CLIENTFLOW_BROKER_URL"] == "redis://redis:6379/0"
