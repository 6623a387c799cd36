"""docker-compose.yml is safe as deployed, checked without a Docker engine (there is none here).

Debian's `docker-compose config` resolves the file exactly as `up` would (interpolation, the
required `${VAR:?...}` secrets, anchors) without a daemon. Every property is asserted twice:
on that resolved config and on the file itself (read with pyyaml, interpolated here), so the
checks still run where docker-compose is not installed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from models.settings import Settings
from workers.broker.rabbitmq import is_amqp
from workers.cli import app as cli

SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")
# RabbitMQ as the broker: docker-compose.rabbitmq.yml, laid over docker-compose.yml.
RABBITMQ_OVERLAY = "docker-compose.rabbitmq.yml"
RABBITMQ_SECRET = "RABBITMQ_PASSWORD"
OUR_IMAGE = "clientflow:local"
OURS = {"migrate", "worker", "beat", "flower", "exporter"}
LONG_RUNNING = {"redis", "postgres", "mailpit", "worker", "beat", "flower", "exporter"}
PUBLISHED = {"mailpit", "flower", "exporter"}


def _compose_text(repo_root: Path, name: str = "docker-compose.yml") -> str:
    return (repo_root / name).read_text()


def _example(repo_root: Path) -> dict[str, str]:
    """NAME=value lines of .env.example."""
    pairs = {}
    for line in (repo_root / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def _filled(repo_root: Path) -> dict[str, str]:
    """What a user writes into .env: every name of .env.example with a value."""
    return {
        name: f"ops:{secrets.token_hex(8)}" if name == "FLOWER_BASIC_AUTH" else secrets.token_hex(8)
        for name in _example(repo_root)
    }


def _write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


_REFERENCE = re.compile(r"\$\$|\$\{(\w+)(?::?[?-][^}]*)?\}")


def _interpolate(node: Any, env: dict[str, str]) -> Any:
    """The subset of compose interpolation the file uses: ${VAR}, ${VAR:?message}, $$."""
    if isinstance(node, dict):
        return {key: _interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, env) for value in node]
    if isinstance(node, str):
        return _REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else env[m.group(1)], node)
    return node


def _strings(text: str) -> list[str]:
    """Every string value in a YAML document (comments are not values)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.append(node)

    walk(yaml.safe_load(text))
    return found


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose): not run")
    return found


def _config(
    compose: str, repo_root: Path, env_file: Path, *overlays: str
) -> subprocess.CompletedProcess[str]:
    # Only --env-file supplies the secrets: a clean environment, so a variable set in the shell
    # running the tests (or a developer's own .env) cannot make a missing one look present.
    files = [
        arg for name in ("docker-compose.yml", *overlays) for arg in ("-f", str(repo_root / name))
    ]
    return subprocess.run(
        [compose, *files, "--env-file", str(env_file), "config"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
        cwd=env_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def env(repo_root: Path) -> dict[str, str]:
    return _filled(repo_root)


@pytest.fixture(params=["file", "docker-compose"])
def config(
    request: pytest.FixtureRequest, repo_root: Path, env: dict[str, str], tmp_path: Path
) -> dict[str, Any]:
    """The compose config as `up` sees it, with the secrets of `env`."""
    if request.param == "file":
        resolved: dict[str, Any] = _interpolate(yaml.safe_load(_compose_text(repo_root)), env)
        return resolved
    result = _config(_docker_compose(), repo_root, _write_env(tmp_path / ".env", env))
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def _ports(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host address, host port) of each published port, short or long syntax."""
    for port in service.get("ports", []):
        if isinstance(port, dict):
            yield str(port.get("host_ip", "")), str(port.get("published", ""))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            yield parts[0], parts[1]
        else:  # "8025:8025" or "8025": every interface
            yield "", parts[0]


def _seconds(duration: str) -> float:
    """Compose durations: 120s, 2m, 2m0s, 1m30s."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


# --- docker-compose itself -------------------------------------------------------------------


def test_docker_compose_accepts_a_filled_env(
    repo_root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    result = _config(_docker_compose(), repo_root, _write_env(tmp_path / ".env", env))
    assert result.returncode == 0, result.stderr
    # The secrets reach the containers: nothing fell back to an empty value.
    redis = yaml.safe_load(result.stdout)["services"]["redis"]
    assert redis["command"][1:3] == ["--requirepass", env["REDIS_PASSWORD"]]


@pytest.mark.parametrize("missing", SECRETS)
def test_docker_compose_refuses_to_start_without_a_secret(
    repo_root: Path, env: dict[str, str], tmp_path: Path, missing: str
) -> None:
    # As after `cp .env.example .env` with this one left empty.
    result = _config(
        _docker_compose(), repo_root, _write_env(tmp_path / ".env", {**env, missing: ""})
    )
    assert result.returncode != 0, result.stdout
    assert f"set {missing}" in result.stderr, result.stderr
    assert ".env.example" in result.stderr


def test_docker_compose_refuses_the_example_as_it_is(repo_root: Path, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    shutil.copy(repo_root / ".env.example", env_file)
    result = _config(_docker_compose(), repo_root, env_file)
    assert result.returncode != 0, result.stdout
    assert "in .env, see .env.example" in result.stderr, result.stderr


# --- secrets: .env.example, .gitignore, no defaults ------------------------------------------


def _required(text: str) -> set[str]:
    """The variables a compose file requires, each checked to be ${VAR:?...}."""
    references = re.findall(r"\$\{([^}]*)\}", "\n".join(_strings(text)))
    assert references
    for reference in references:
        # ${VAR:?...} only: a default (${VAR:-change-me}) would be a password that works.
        assert re.fullmatch(r"\w+:\?set \w+.* in \.env, see \.env\.example", reference), reference
    return {reference.split(":")[0] for reference in references}


def test_every_secret_is_required_and_has_no_default(repo_root: Path) -> None:
    required = _required(_compose_text(repo_root))
    assert required == set(SECRETS)
    assert _required(_compose_text(repo_root, RABBITMQ_OVERLAY)) == {RABBITMQ_SECRET}
    example = _example(repo_root)
    assert set(example) == required | {RABBITMQ_SECRET}
    # Empty in the example: copying it without setting them makes compose refuse to start.
    assert all(value == "" for value in example.values()), example


def test_env_is_ignored_by_git(repo_root: Path) -> None:
    git = shutil.which("git")
    if git is None or not (repo_root / ".git").exists():
        lines = (repo_root / ".gitignore").read_text().splitlines()
        assert ".env" in lines
        return
    ignored = [git, "-C", str(repo_root), "check-ignore", "-q"]
    assert subprocess.run([*ignored, ".env"], check=False).returncode == 0
    assert subprocess.run([*ignored, ".env.example"], check=False).returncode == 1


# --- the resolved config ---------------------------------------------------------------------


def test_runs_every_part_of_the_service(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"redis", "postgres", "mailpit"} | OURS
    assert services["beat"]["command"][:4] == ["celery", "-A", "workers.app", "beat"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "workers.app", "worker"]
    assert services["flower"]["command"][:4] == ["celery", "-A", "workers.app", "flower"]
    for name in OURS - {"migrate"}:
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_redis_is_private_password_protected_and_persistent(
    config: dict[str, Any], env: dict[str, str]
) -> None:
    redis = config["services"]["redis"]
    password = env["REDIS_PASSWORD"]
    assert "ports" not in redis
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == password
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target.split(":")[0] == "/data"
    assert volume in config["volumes"]
    # The healthcheck authenticates (redis-cli reads REDISCLI_AUTH) and wants PONG, not NOAUTH.
    assert redis["environment"]["REDISCLI_AUTH"] == password
    assert "redis-cli ping" in redis["healthcheck"]["test"][1]
    assert "PONG" in redis["healthcheck"]["test"][1]
    for name in OURS:
        broker = config["services"][name]["environment"]["CLIENTFLOW_BROKER_URL"]
        assert broker == f"redis://:{password}@redis:6379/0"


def test_postgres_is_private_password_protected_and_persistent(
    config: dict[str, Any], env: dict[str, str]
) -> None:
    postgres = config["services"]["postgres"]
    password = env["POSTGRES_PASSWORD"]
    assert "ports" not in postgres
    assert postgres["environment"]["POSTGRES_PASSWORD"] == password
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target.split(":")[0] == "/var/lib/postgresql/data"
    assert volume in config["volumes"]
    # Over TCP, or the image's socket-only first-start server passes it.
    check = postgres["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    assert check[1].startswith("pg_isready -h 127.0.0.1 ")
    for name in OURS:
        url = config["services"][name]["environment"]["CLIENTFLOW_DATABASE_URL"]
        assert url == f"postgresql+psycopg://clientflow:{password}@postgres:5432/clientflow"


def test_every_published_port_is_bound_to_localhost(config: dict[str, Any]) -> None:
    published = {
        name: list(_ports(service))
        for name, service in config["services"].items()
        if service.get("ports")
    }
    assert set(published) == PUBLISHED
    for name, ports in published.items():
        for host, port in ports:
            assert host == "127.0.0.1", f"{name} publishes {port} on {host or 'every interface'}"


def test_flower_requires_the_basic_auth_of_env(config: dict[str, Any], env: dict[str, str]) -> None:
    # Without authentication Flower 2 answers its API with 401 (and the UI is open to anyone).
    environment = config["services"]["flower"]["environment"]
    assert environment["FLOWER_BASIC_AUTH"] == env["FLOWER_BASIC_AUTH"]


def test_long_running_services_restart_and_migrate_does_not(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in LONG_RUNNING:
        assert services[name].get("restart") == "unless-stopped", name
    # A one-shot: restarted after it succeeded, it would run forever.
    assert services["migrate"].get("restart", "no") == "no"


def test_worker_stop_grace_period_outlasts_a_delivery_batch(config: dict[str, Any]) -> None:
    grace = _seconds(config["services"]["worker"]["stop_grace_period"])
    # Docker's default is 10 s; a batch in flight needs room for a few SMTP commands that each
    # may wait the SMTP timeout (see the comment in docker-compose.yml).
    assert grace >= 4 * Settings().smtp_timeout
    assert grace < Settings().sending_lease_seconds


def test_one_image_built_once(config: dict[str, Any]) -> None:
    services = config["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["migrate"]
    assert services["migrate"]["image"] == OUR_IMAGE
    assert {name for name, s in services.items() if s.get("image") == OUR_IMAGE} == OURS
    for name in OURS - {"migrate"}:
        # Never pulled (it is on no registry) and created after migrate has built it.
        assert services[name].get("pull_policy") == "never", name
        assert "migrate" in services[name]["depends_on"], name


def test_images_are_pinned(config: dict[str, Any], repo_root: Path) -> None:
    images = [s["image"] for s in config["services"].values() if s["image"] != OUR_IMAGE]
    froms = re.findall(r"^FROM\s+(\S+)", (repo_root / "Dockerfile").read_text(), re.MULTILINE)
    assert images
    assert froms
    for image in [*images, *froms]:
        _, _, tag = image.rpartition(":")
        assert "/" not in tag, f"{image} has no tag"
        # A version (7.4, 16.6, v1.21, 3.11.11), never latest or a bare major.
        assert re.match(r"v?\d+\.\d+", tag), image


def test_environment_names_real_settings(config: dict[str, Any]) -> None:
    services = config["services"]
    known = {f"CLIENTFLOW_{name.upper()}" for name in Settings.model_fields}
    for name in OURS:
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
        assert settings.broker_url.startswith("redis://:")
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.smtp_url == "smtp://mailpit:1025"


def test_worker_healthcheck_and_exporter_are_real_clientflow_commands(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    healthcheck = services["worker"]["healthcheck"]["test"]
    assert healthcheck == ["CMD", "clientflow", "ops", "ping", "--local"]
    exporter = services["exporter"]["command"]
    assert exporter[:3] == ["clientflow", "ops", "exporter"]
    # Inside its container the exporter must listen beyond loopback for the port mapping to
    # reach it; whatever the CLI's default, compose says so (the host side stays 127.0.0.1).
    assert exporter[exporter.index("--host") + 1] == "0.0.0.0"
    for command in (healthcheck[1:], exporter):
        # --help still parses every option before it, so an unknown one fails here.
        result = CliRunner().invoke(cli, [*command[1:], "--help"])
        assert result.exit_code == 0, result.output


# --- the migrate step, run for real with stand-ins --------------------------------------------


def _stand_in(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize(("failures", "calls", "exit_code"), [(0, 1, 0), (2, 3, 0), (99, 5, 1)])
def test_migrate_retries_a_bounded_number_of_times(
    repo_root: Path, env: dict[str, str], tmp_path: Path, failures: int, calls: int, exit_code: int
) -> None:
    command = _interpolate(yaml.safe_load(_compose_text(repo_root)), env)["services"]["migrate"][
        "command"
    ]
    assert command[:2] == ["sh", "-c"]
    assert "clientflow db upgrade" in command[2]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    # clientflow fails `failures` times, then succeeds; sleep returns at once.
    _stand_in(
        bin_dir,
        "clientflow",
        f'echo "$*" >> {log}; [ "$(wc -l < {log})" -gt {failures} ]',
    )
    _stand_in(bin_dir, "sleep", "exit 0")
    result = subprocess.run(
        command,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == exit_code, result.stderr
    assert log.read_text().splitlines() == ["db upgrade"] * calls


# --- RabbitMQ as the broker: docker-compose.rabbitmq.yml over docker-compose.yml ----------------


def _laid_over(base: Any, overlay: Any) -> Any:
    """Compose's merge of a second file, for what the overlay uses: maps merge key by key
    (a service's environment, its depends_on), anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _laid_over(base[key], value) if key in base else value
        return merged
    return overlay


@pytest.fixture(params=["file", "docker-compose"])
def rabbitmq_config(
    request: pytest.FixtureRequest, repo_root: Path, env: dict[str, str], tmp_path: Path
) -> dict[str, Any]:
    """Both files as `docker compose -f docker-compose.yml -f docker-compose.rabbitmq.yml up`
    sees them."""
    if request.param == "file":
        both = _laid_over(
            yaml.safe_load(_compose_text(repo_root)),
            yaml.safe_load(_compose_text(repo_root, RABBITMQ_OVERLAY)),
        )
        resolved: dict[str, Any] = _interpolate(both, env)
        return resolved
    result = _config(
        _docker_compose(), repo_root, _write_env(tmp_path / ".env", env), RABBITMQ_OVERLAY
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_rabbitmq_overlay_points_every_clientflow_service_at_rabbitmq(
    rabbitmq_config: dict[str, Any], env: dict[str, str]
) -> None:
    services = rabbitmq_config["services"]
    url = f"amqp://clientflow:{env[RABBITMQ_SECRET]}@rabbitmq:5672/"
    for name in OURS:
        environment = services[name]["environment"]
        assert environment["CLIENTFLOW_BROKER_URL"] == url, name
        # The rest of the base file's settings are still there, merged, not replaced.
        assert environment["CLIENTFLOW_SMTP_URL"] == "smtp://mailpit:1025", name
        # A URL the settings accept and the workers read as RabbitMQ (quorum queues).
        settings = Settings(broker_url=environment["CLIENTFLOW_BROKER_URL"])
        assert is_amqp(settings.broker_url)
    for name in OURS - {"migrate"}:  # migrate only upgrades the database
        depends_on = services[name]["depends_on"]
        assert depends_on["rabbitmq"] == {"condition": "service_healthy"}, name
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}, name


def test_rabbitmq_is_private_password_protected_persistent_and_pinned(
    rabbitmq_config: dict[str, Any], env: dict[str, str]
) -> None:
    rabbitmq = rabbitmq_config["services"]["rabbitmq"]
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"] == "clientflow"
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"] == env[RABBITMQ_SECRET]
    # AMQP (5672) is for the other containers only; the management UI on localhost only.
    assert list(_ports(rabbitmq)) == [("127.0.0.1", "15672")]
    volume, _, target = rabbitmq["volumes"][0].partition(":")
    assert target.split(":")[0] == "/var/lib/rabbitmq"
    assert volume in rabbitmq_config["volumes"]
    # The node name follows the host name: fixed, so a recreated container finds its queues.
    assert rabbitmq["hostname"] == "rabbitmq"
    assert re.fullmatch(r"rabbitmq:\d+\.\d+\.\d+-management-alpine", rabbitmq["image"])
    assert "rabbitmq-diagnostics" in rabbitmq["healthcheck"]["test"]
    assert rabbitmq["restart"] == "unless-stopped"


def test_docker_compose_refuses_rabbitmq_without_its_password(
    repo_root: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env_file = _write_env(tmp_path / ".env", {**env, RABBITMQ_SECRET: ""})
    result = _config(_docker_compose(), repo_root, env_file, RABBITMQ_OVERLAY)
    assert result.returncode != 0, result.stdout
    assert f"set {RABBITMQ_SECRET}" in result.stderr, result.stderr
    # Redis as the broker (the base file alone) does not need it.
    assert _config(_docker_compose(), repo_root, env_file).returncode == 0


# --- the image ---------------------------------------------------------------------------------


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    result = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            result.append((instruction.upper(), " ".join(arguments.split())))
    return result


def test_the_image_holds_the_code_and_no_secrets(repo_root: Path) -> None:
    instructions = _instructions((repo_root / "Dockerfile").read_text())
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = [arguments.split()[:-1] for name, arguments in instructions if name == "COPY"]
    sources = {source for group in copied for source in group}
    # Every package of the wheel, and nothing picked up wholesale (`COPY . .` would take .env).
    assert set(packages) <= sources
    assert all(not Path(source).name.startswith(".") and source != "." for source in sources)
    for source in sources:
        assert (repo_root / source).exists(), source


def test_the_image_installs_flower_and_runs_unprivileged(repo_root: Path) -> None:
    instructions = _instructions((repo_root / "Dockerfile").read_text())
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert any(
        dependency.startswith("flower")
        for dependency in pyproject["project"]["optional-dependencies"]["flower"]
    )
    installs = [
        arguments
        for name, arguments in instructions
        if name == "RUN" and "pip install" in arguments
    ]
    assert len(installs) == 1
    assert "-c constraints.txt" in installs[0]
    assert "'.[flower]'" in installs[0]
    users = [arguments for name, arguments in instructions if name == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    assert instructions.index(("USER", users[-1])) > max(
        i for i, (name, _) in enumerate(instructions) if name == "RUN"
    )
