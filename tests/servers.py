"""Find or start the real Redis and PostgreSQL servers the test suite runs against.

Also the process helpers the benchmarks share with the tests (free_port,
environ_without_settings): bench/ imports them from here and keeps no copy of its own.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

START_TIMEOUT = 10.0

T = TypeVar("T")


class ServerUnavailable(Exception):
    """No server answers and none can be started; the message says what to install."""


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def free_port() -> int:
    # Bound, not 0 passed on: aiosmtpd's and our own readiness probes connect to the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Poll check() until it returns something truthy, and return that (tests and benchmarks).

    On timeout raise AssertionError naming `what` and the last value check() returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            description = what() if callable(what) else what
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {description}; last seen: {value!r}"
            )
        time.sleep(interval)


def environ_without_settings() -> dict[str, str]:
    """os.environ without any CLIENTFLOW_* variable, for a child process: it then sees only
    the settings its caller adds, never the ones of the shell that started the run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLIENTFLOW_")}


def _libpq_url(url: str) -> str:
    # libpq does not understand SQLAlchemy's "+driver" suffix on the scheme.
    return re.sub(r"^(postgres(?:ql)?)\+\w+://", r"\1://", url)


def _redact(url: str) -> str:
    # URLs end up in error messages and CI logs; passwords must not.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _wait_until(ready: Callable[[], bool], alive: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if not alive():
            raise RuntimeError(f"{what} exited during startup; log:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} did not answer within {START_TIMEOUT:.0f}s; log:\n{_tail(log)}"
            )
        time.sleep(0.05)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 that keeps its port across restarts.

    persistent=True keeps an append-only file (fsync always) in a folder that survives
    stop()/start(), as a production broker would: queued messages outlive a restart.
    close() ends it and removes the folder.
    """

    def __init__(self, port: int | None = None, persistent: bool = False) -> None:
        self.port = port if port is not None else free_port()
        self.persistent = persistent
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self._proc is not None:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable(
                "redis-server is not installed: install Redis (apt-get install redis-server)"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="clientflow-redis-"))
        log = self._dir / "redis.log"
        durability = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        command = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            *durability,
            "--dir", str(self._dir),
        ]  # fmt: skip
        with log.open("wb") as out:
            self._proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        proc = self._proc
        try:
            _wait_until(
                lambda: redis_answers(self.url),
                lambda: proc.poll() is None,
                f"redis-server on port {self.port}",
                log,
            )
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if not self.persistent:
            self._remove_dir()

    def close(self) -> None:
        self.stop()
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def postgres_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found is not None:
        # Resolve symlinks so pg_ctl is looked up next to the real initdb.
        return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and (bindir / "initdb").is_file():
            return bindir
    # Debian/Ubuntu keep the server binaries off PATH, one directory per version.
    candidates = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if path.parent.parent.name.isdigit()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda bindir: int(bindir.parent.name))


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with trust auth and fsync off."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._dir: Path | None = None
        self._bindir = Path()
        self._prefix: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if self._dir is not None:
            return
        bindir = postgres_bindir()
        if bindir is None:
            raise ServerUnavailable(
                "initdb/pg_ctl are not installed: install PostgreSQL (apt-get install postgresql)"
            )
        self._bindir = bindir
        self._dir = Path(tempfile.mkdtemp(prefix="clientflow-pg-"))
        try:
            self._drop_root()
            self._start()
        except BaseException:
            self.stop()
            raise

    def _drop_root(self) -> None:
        # initdb and postgres refuse to run as root, so run them as the postgres user.
        if os.geteuid() != 0:
            return
        assert self._dir is not None
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable(
                "running as root needs a 'postgres' OS user to start PostgreSQL:"
                " install PostgreSQL (apt-get install postgresql)"
            ) from None
        os.chown(self._dir, user.pw_uid, user.pw_gid)
        if shutil.which("runuser"):
            self._prefix = ["runuser", "-u", "postgres", "--"]
        else:
            self._prefix = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--init-groups",
                "--",
            ]

    def _start(self) -> None:
        assert self._dir is not None
        data = self._dir / "data"
        log = self._dir / "postgres.log"
        self._run(
            "initdb", "-D", str(data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        # Settings go in the config file so pg_ctl's shell never has to quote them;
        # the socket lives in our temp dir to stay clear of the system cluster's.
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self._dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        self._run("pg_ctl", "start", "-D", str(data), "-l", str(log), "-w", "-t", "30")
        _wait_until(
            lambda: postgres_answers(self.url),
            (data / "postmaster.pid").exists,
            f"PostgreSQL on port {self.port}",
            log,
        )

    def _run(self, tool: str, *args: str) -> None:
        assert self._dir is not None
        # cwd is the temp dir because the postgres user may not be allowed into ours.
        result = subprocess.run(
            [*self._prefix, str(self._bindir / tool), *args],
            cwd=self._dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {args[0]} failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\nlog:\n{_tail(self._dir / 'postgres.log')}"
            )

    def stop(self) -> None:
        if self._dir is None:
            return
        data = self._dir / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

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


def redis_url_for_worker(url: str, worker: str | None) -> str:
    """The Redis database one pytest-xdist worker (gw0, gw1, ...) uses: url's database minus
    the worker's index, so gw0 keeps db 15 and gw1 takes 14 by default.

    Each worker needs its own database because WorkerProcess flushes its database on
    creation. Without xdist (worker None, or "master") url is used as it is.
    """
    if worker is None or not worker.startswith("gw"):
        return url
    index = int(worker.removeprefix("gw"))
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    if index > base:
        raise ServerUnavailable(
            f"xdist worker {worker} needs Redis database {base} - {index}, below 0:"
            f" set CLIENTFLOW_TEST_REDIS_URL to a database of at least {index}"
            " or run fewer workers"
        )
    return urlunsplit(parts._replace(path=f"/{base - index}"))


def find_or_start_redis(url: str) -> tuple[str, RedisServer | None]:
    """Use the Redis at url if it answers, else start a throwaway one."""
    if redis_answers(url):
        return url, None
    if shutil.which("redis-server") is None:
        raise ServerUnavailable(
            f"Redis does not answer at {_redact(url)} and redis-server is not installed:"
            " install Redis (apt-get install redis-server) or set CLIENTFLOW_TEST_REDIS_URL"
        )
    server = RedisServer()
    server.start()
    return server.url, server


def find_or_start_postgres(url: str) -> tuple[str, PostgresServer | None]:
    """Use the PostgreSQL at url if it answers, else start a throwaway cluster."""
    if postgres_answers(url):
        return url, None
    if postgres_bindir() is None:
        raise ServerUnavailable(
            f"PostgreSQL does not answer at {_redact(url)} and initdb/pg_ctl are not"
            " installed: install PostgreSQL (apt-get install postgresql)"
            " or set CLIENTFLOW_TEST_DATABASE_URL"
        )
    server = PostgresServer()
    server.start()
    return server.url, server


def create_database(admin_url: str, name: str) -> str:
    """Create database name on admin_url's server and return its SQLAlchemy URL."""
    with psycopg.connect(_libpq_url(admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(_libpq_url(admin_url))
    return urlunsplit(
        ("postgresql+psycopg", parts.netloc, "/" + quote(name, safe=""), parts.query, "")
    )


@contextmanager
def refusing_connections(admin_url: str, name: str) -> Iterator[None]:
    """Database `name` down for its clients until the block ends: new connections refused,
    open ones cut (the server itself, and every other database on it, stay up)."""

    def allow(connections: bool) -> None:
        with psycopg.connect(_libpq_url(admin_url), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if connections else "false")
            ))  # fmt: skip
            if not connections:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    allow(False)
    try:
        yield
    finally:
        allow(True)


def drop_database(admin_url: str, name: str) -> None:
    # FORCE ends sessions a test left open, which would otherwise block the drop.
    with psycopg.connect(_libpq_url(admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
