"""The SMTP sink of the benchmarks: postfix's C `smtp-sink`, or aiosmtpd in a process of its own.

postfix's `smtp-sink` answers 250 to thousands of messages a second from one core, so it is never
what bounds a benchmark. It is not installed: the first run fetches the Debian package with
`apt-get download postfix` and unpacks it with `dpkg -x` under ~/.cache/clientflow-bench/
(nothing is installed, no MTA runs). Where that cannot be done, the fallback is aiosmtpd,
started as `python -m bench.sink` in a separate process (never in the benchmark's own), which
speaks the same two outputs:

- `-c`: a running counter on stdout, `sess=N quit=N mesg=N` then a carriage return, after each
  message; `received()` reads the last one.
- `-d DIR/%H%M%S.`: each message dumped to a file of its own, headed by `X-Rcpt-Args: <address>`;
  `deliveries()` reads the recipients and each file's modification time (when the message was
  received), which is what the latency measurement matches publish times against.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from aiosmtpd.controller import Controller

from bench.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clientflow-bench"
POSTFIX_DIR = CACHE / "postfix"
HOST = "127.0.0.1"
BACKLOG = "1000"

_COUNTER = re.compile(rb"mesg=(\d+)")
_RCPT = re.compile(r"<([^>]*)>")


def _runs(binary: Path, libdir: Path) -> bool:
    """smtp-sink with no arguments prints its usage and exits: proof that it loads."""
    try:
        done = subprocess.run(
            [str(binary)],
            env={**os.environ, "LD_LIBRARY_PATH": str(libdir)},
            capture_output=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return False
    return b"usage" in done.stderr


def postfix_smtp_sink() -> tuple[Path, Path] | str:
    """(smtp-sink, its library folder), fetched into the cache if need be; or why not."""
    binary = POSTFIX_DIR / "usr/sbin/smtp-sink"
    libdir = POSTFIX_DIR / "usr/lib/postfix"
    if binary.exists():
        return (binary, libdir) if _runs(binary, libdir) else f"{binary} does not run"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return "apt-get and dpkg are not both available"
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        try:
            subprocess.run(
                ["apt-get", "download", "postfix"],
                cwd=tmp, capture_output=True, timeout=180, check=True,
            )  # fmt: skip
            debs = sorted(Path(tmp).glob("postfix_*.deb"))
            if not debs:
                return "apt-get download postfix left no .deb"
            unpacked = Path(tmp) / "root"
            subprocess.run(
                ["dpkg", "-x", str(debs[0]), str(unpacked)],
                capture_output=True, timeout=120, check=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            return f"fetching postfix failed: {exc} {stderr.decode(errors='replace')[-300:]}"
        if not _runs(unpacked / "usr/sbin/smtp-sink", unpacked / "usr/lib/postfix"):
            return "the unpacked smtp-sink does not run (a missing shared library?)"
        # postfix_3.7.11-0+deb12u1_amd64.deb: the version is the middle part.
        (unpacked / "VERSION").write_text(debs[0].name.split("_")[1] + "\n")
        shutil.rmtree(POSTFIX_DIR, ignore_errors=True)
        unpacked.rename(POSTFIX_DIR)
    return binary, libdir


def _postfix_version() -> str:
    try:
        return (POSTFIX_DIR / "VERSION").read_text().strip()
    except OSError:
        return "unknown version"


class Sink:
    """An SMTP server on 127.0.0.1 that accepts everything; counts and optionally dumps it."""

    def __init__(self, workdir: Path, *, dump: bool = False, allow_postfix: bool = True) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.dump_dir: Path | None = None
        if dump:
            # tmpfs where there is one: dumping must cost the sink next to nothing.
            base = Path("/dev/shm") if Path("/dev/shm").is_dir() else workdir
            self.dump_dir = Path(tempfile.mkdtemp(prefix="clientflow-bench-dump-", dir=base))
        self._allow_postfix = allow_postfix
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = workdir / f"sink-{self.port}.out"
        self.kind = ""
        self.fallback_reason = ""

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the sink is not started")
        return self._proc.pid

    def start(self, timeout: float = 15.0) -> None:
        found = postfix_smtp_sink() if self._allow_postfix else "postfix smtp-sink not allowed"
        env = dict(os.environ)
        if isinstance(found, tuple):
            binary, libdir = found
            env["LD_LIBRARY_PATH"] = str(libdir)
            command = [str(binary), "-c"]
            if os.geteuid() == 0:
                command += ["-u", "nobody"]  # it refuses to run as root otherwise
            if self.dump_dir is not None:
                self.dump_dir.chmod(0o777)  # written by `nobody`
                command += ["-d", f"{self.dump_dir}/%H%M%S."]
            command += [f"{HOST}:{self.port}", BACKLOG]
            self.kind = f"postfix smtp-sink ({_postfix_version()})"
        else:
            self.fallback_reason = found
            command = [sys.executable, "-m", "bench.sink", "--port", str(self.port)]
            if self.dump_dir is not None:
                command += ["--dump", str(self.dump_dir)]
            self.kind = "aiosmtpd (separate process)"
        with self._out.open("wb") as out, (self.workdir / f"sink-{self.port}.err").open("wb") as e:
            self._proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=e, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                return
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the SMTP sink ({self.kind}) did not start: {command}")
            time.sleep(0.05)

    def received(self) -> int:
        """Messages accepted so far (the last `mesg=` counter on the sink's stdout)."""
        try:
            with self._out.open("rb") as out:
                size = out.seek(0, os.SEEK_END)
                out.seek(max(0, size - 128))
                found = _COUNTER.findall(out.read())
        except FileNotFoundError:
            return 0
        return int(found[-1]) if found else 0

    def deliveries(self) -> list[tuple[str, int]]:
        """(recipient, time received in ns since the epoch) of each dumped message."""
        if self.dump_dir is None:
            raise RuntimeError("this sink does not dump messages")
        found = []
        for path in self.dump_dir.iterdir():
            received_ns = path.stat().st_mtime_ns
            with path.open("r", errors="replace") as dumped:
                for line in dumped:
                    if not line.strip():
                        break
                    if line.startswith("X-Rcpt-Args:"):
                        match = _RCPT.search(line)
                        if match:
                            found.append((match.group(1), received_ns))
        return found

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self.dump_dir is not None:
            shutil.rmtree(self.dump_dir, ignore_errors=True)

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


# -- the aiosmtpd fallback, run as `python -m bench.sink` --------------------------------------


class _Handler:
    def __init__(self, out: IO[str], dump: Path | None) -> None:
        self.count = 0
        self._out = out
        self._dump = dump

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        if self._dump is not None:
            head = "".join(f"X-Rcpt-Args: <{rcpt}>\n" for rcpt in envelope.rcpt_tos)
            content = (envelope.original_content or b"").decode("utf-8", "replace")
            (self._dump / f"m.{self.count:08d}").write_text(f"{head}\n{content}")
        self._out.write(f"sess=0 quit=0 mesg={self.count}\r")
        self._out.flush()
        return "250 OK"


def _serve() -> None:
    parser = argparse.ArgumentParser(description="aiosmtpd sink speaking smtp-sink's -c and -d")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dump", type=Path, default=None)
    args = parser.parse_args()
    controller = Controller(_Handler(sys.stdout, args.dump), hostname=HOST, port=args.port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    _serve()
