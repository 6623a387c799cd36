"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from workers.settings import Settings


def _compose(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return data


def test_runs_every_part_of_the_service(repo_root: Path) -> None:
    services = _compose(repo_root)["services"]
    assert {"redis", "postgres", "migrate", "worker", "beat", "mailpit"} <= set(services)
    assert services["migrate"]["command"] == ["clientflow", "db", "upgrade"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "workers.app", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "workers.app", "beat"]
    for name in ("worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_environment_names_real_settings(repo_root: Path) -> None:
    services = _compose(repo_root)["services"]
    known = {f"CLIENTFLOW_{name.upper()}" for name in Settings.model_fields}
    for name in ("migrate", "worker", "beat"):
        environment = services[name]["environment"]
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
