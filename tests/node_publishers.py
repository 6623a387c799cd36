"""The Node.js publishers of tests/node, run as child processes by the tests.

Their npm packages (tests/node/package.json, pinned by its package-lock.json) are installed
when a test first needs them, with `npm ci`, into var/node/<hash of the two files>/: not by
`make install`, so working on clientflow never needs Node, and a changed lock file gets a fresh
install beside the old one. `make clean` removes them with the rest of var/.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from servers import environ_without_settings

NODE_DIR = Path(__file__).resolve().parent / "node"
CACHE = NODE_DIR.parents[1] / "var" / "node"
MANIFESTS = ("package.json", "package-lock.json")
INSTALL_TIMEOUT = 300.0
PUBLISH_TIMEOUT = 60.0


class NodeUnavailable(Exception):
    """Node.js, npm or the npm packages cannot be had here; the message says why, in a line."""


# Lines of npm's error output that do not say what went wrong.
_NPM_NOISE = ("code ", "syscall ", "errno ", "A complete log", "If you are behind a proxy", "}")


def _npm_reason(output: str) -> str:
    """The line of npm's error output that says what went wrong: not its error code, its
    stack trace or where it put its log."""
    lines = [line for line in output.splitlines() if line.strip()]
    for line in lines:
        match = re.match(r"npm (?:error|ERR!) (\S.*)", line)
        if match and not match.group(1).startswith(_NPM_NOISE):
            return match.group(1)[:300]
    return lines[-1].strip()[:300] if lines else "no output"


def node_modules() -> Path:
    """The node_modules folder of tests/node's locked packages, installing them once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        raise NodeUnavailable(f"{missing} not installed: install Node.js 18 or later with npm")
    digest = hashlib.sha256()
    for name in MANIFESTS:
        digest.update((NODE_DIR / name).read_bytes())
    target = CACHE / digest.hexdigest()[:16]
    if target.is_dir():
        return target / "node_modules"
    CACHE.mkdir(parents=True, exist_ok=True)
    # Installed beside the target and renamed into place: a folder under its final name is
    # always a complete install, even after an interrupted or concurrent run.
    staging = Path(tempfile.mkdtemp(dir=CACHE, prefix="installing-"))
    try:
        for name in MANIFESTS:
            shutil.copy2(NODE_DIR / name, staging / name)
        command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"]
        try:
            result = subprocess.run(
                command, cwd=staging, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise NodeUnavailable(
                f"npm ci of tests/node did not finish within {INSTALL_TIMEOUT:.0f}s"
            ) from None
        if result.returncode != 0:
            raise NodeUnavailable(
                f"npm ci of tests/node failed (exit {result.returncode}): "
                f"{_npm_reason(result.stderr or result.stdout)}"
            )
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise  # not a concurrent install that got there first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "node_modules"


def publish(script: str, modules: Path, broker_url: str, events: list[dict[str, Any]]) -> list[str]:
    """Run tests/node/<script> on `events`; the task id of each, in order."""
    node = shutil.which("node")
    if node is None:
        raise NodeUnavailable("node not installed: install Node.js 18 or later with npm")
    result = subprocess.run(
        [node, str(NODE_DIR / script)],
        input=json.dumps({"broker": broker_url, "events": events}),
        # The scripts live outside the cached install: NODE_PATH is where require() finds it.
        env={**environ_without_settings(), "NODE_PATH": str(modules)},
        capture_output=True,
        text=True,
        timeout=PUBLISH_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"node {script} exited with {result.returncode}:\n{result.stderr}{result.stdout}"
        )
    ids: list[str] = json.loads(result.stdout)
    return ids
