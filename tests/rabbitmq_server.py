"""Find or start the RabbitMQ the RabbitMQ tests run against, and give each test a vhost.

The machine's node (CLIENTFLOW_TEST_RABBITMQ_URL, default amqp://guest:guest@127.0.0.1:5672/)
is used when it answers and `rabbitmqctl` can manage it; otherwise, when `rabbitmq-server` is
installed, the suite starts a throwaway node of its own (own node name, ports, data and log
folders and Erlang cookie under a temporary folder). Each test gets a vhost of its own, so
tests never see each other's queues. A test that stops the broker (`stop_app`) always gets a
throwaway node: the machine's node is shared with other people.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import amqp
from servers import ServerUnavailable, free_port

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
START_TIMEOUT = 90
CTL_TIMEOUT = 60


def rabbitmq_installed() -> bool:
    return shutil.which("rabbitmq-server") is not None


def amqp_answers(url: str) -> bool:
    parts = urlsplit(url)
    connection = amqp.Connection(
        host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
        userid=parts.username or "guest",
        password=parts.password or "guest",
        virtual_host="/",
        connect_timeout=2,
    )
    try:
        connection.connect()
        return True
    except Exception:  # refused, reset, auth: it does not answer for us
        return False
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _script_dir() -> Path:
    """Where the real scripts are: Debian's rabbitmq-server is a wrapper that switches to the
    rabbitmq user when run as root; the scripts next to its target run as the caller."""
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise ServerUnavailable(
            "rabbitmq-server is not installed: install RabbitMQ (apt-get install rabbitmq-server)"
        )
    return Path(found).resolve().parent


@dataclass(frozen=True)
class QueueInfo:
    name: str
    type: str
    messages: int
    unacked: int


class Node:
    """A RabbitMQ node that `rabbitmqctl` can manage: the machine's or a throwaway one."""

    def __init__(self, url: str, ctl: list[str], env: dict[str, str] | None = None) -> None:
        self.url = url
        self._ctl = ctl
        self._env = env

    def ctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [*self._ctl, *args],
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
            env=self._env,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def manageable(self) -> bool:
        try:
            self.ctl("-q", "list_vhosts")
            return True
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            return False

    def add_vhost(self) -> Vhost:
        name = f"clientflow-test-{uuid.uuid4().hex[:10]}"
        self.ctl("add_vhost", name)
        user = urlsplit(self.url).username or "guest"
        self.ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        return Vhost(self, name)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def close(self) -> None:
        """The machine's node is left as it was."""


class ThrowawayNode(Node):
    """rabbitmq-server of the suite's own, in a temporary folder, on free ports."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="clientflow-rabbitmq-"))
        self.name = f"clientflow-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        home = self._dir / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self._dir / "rabbitmq.conf").write_text("loopback_users = none\n")
        (self._dir / "rabbitmq-env.conf").write_text("")
        (self._dir / "enabled_plugins").write_text("[].\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self._dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self._dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self._dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self._dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self._dir / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # The distribution port on loopback only, as the node's AMQP port.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        scripts = _script_dir()
        super().__init__(
            f"amqp://guest:guest@127.0.0.1:{self.port}/",
            [str(scripts / "rabbitmqctl"), "-n", self.name],
            env,
        )
        self._server = scripts / "rabbitmq-server"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self._dir / "server.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [str(self._server)],
                cwd=self._dir,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.ctl("wait", "--timeout", str(START_TIMEOUT), str(self._dir / "rabbitmq.pid"))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            self.close()
            raise RuntimeError(f"throwaway RabbitMQ node did not start: {exc}\n{tail}") from None

    def close(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self.ctl("shutdown", check=False)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)


class Vhost:
    """One test's vhost: its broker URL, its queues as rabbitmqctl sees them, and removal."""

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name
        self.url = urlunsplit(urlsplit(node.url)._replace(path="/" + quote(name, safe="")))

    def queues(self) -> dict[str, QueueInfo]:
        out = self.node.ctl(
            "-q", "list_queues", "-p", self.name, "--no-table-headers",
            "name", "type", "messages", "messages_unacknowledged",
        )  # fmt: skip
        found = {}
        for line in out.splitlines():
            name, kind, messages, unacked = line.split("\t")
            found[name] = QueueInfo(name, kind, int(messages), int(unacked))
        return found

    def delete(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.node.ctl("delete_vhost", self.name)


def throwaway_node() -> ThrowawayNode:
    """A started node of the caller's own; one retry, for a port taken in between."""
    if not rabbitmq_installed():
        raise ServerUnavailable(
            "rabbitmq-server is not installed: install RabbitMQ (apt-get install rabbitmq-server)"
        )
    try:
        node = ThrowawayNode()
        node.start()
    except RuntimeError:
        node = ThrowawayNode()
        node.start()
    return node


def find_or_start_rabbitmq(url: str = DEFAULT_URL) -> Node:
    """The machine's node when it answers at url and rabbitmqctl manages it, else our own."""
    if not rabbitmq_installed():
        raise ServerUnavailable(
            "rabbitmq-server is not installed: install RabbitMQ (apt-get install rabbitmq-server)"
        )
    if amqp_answers(url):
        shared = Node(url, ["rabbitmqctl"])
        if shared.manageable():
            return shared
    return throwaway_node()
