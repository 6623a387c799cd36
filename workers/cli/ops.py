"""`clientflow ops`: status of queues, workers, tasks and failures; Prometheus; health ping."""

from __future__ import annotations

import contextlib
import time

import typer
from rich.live import Live
from rich.text import Text

from tasks import runtime
from workers.cli.common import celery_app, console
from workers.ops.exporter import serve
from workers.ops.ping import run_checks
from workers.ops.render import literal, render
from workers.ops.snapshot import Snapshot
from workers.ops.status import build_snapshot, unhealthy

ops_app = typer.Typer(
    help="For the people on call: what is healthy, what is stuck, what failed and why.",
    no_args_is_help=True,
)

# `ops status` and `ops ping` exit with this when something they check is unhealthy (2 is for
# a command that could not run at all: a bad option or setting).
UNHEALTHY = 1


@ops_app.command("status")
def status(
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object (schema in docs/operations.md)."
    ),
    watch: bool = typer.Option(False, "--watch", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(2.0, help="Seconds between refreshes with --watch."),
) -> None:
    """Queues, workers, task outcomes of the last hour, dead letters, emails, invoice run.

    Exits 0 when healthy and 1 when unhealthy (with --json too; with --watch, as of the last
    refresh): the broker or the database does not answer or is not migrated, no worker answers,
    dead letters are not replayed, or the last invoice run failed or was abandoned. Failed
    emails are shown but do not count: they stay failed in the message log for good.
    """
    app = celery_app()
    latest: list[Snapshot] = []

    def snapshot_now() -> Snapshot:
        latest[:] = [build_snapshot(app, runtime.session_factory())]
        return latest[0]

    if as_json:
        typer.echo(snapshot_now().model_dump_json(indent=2))
    elif not watch:
        console.print(render(snapshot_now()))
    else:
        # The whole screen, like top: the tables are taller than a terminal, and Live can only
        # redraw in place what fits on it.
        live = Live(render(snapshot_now()), console=console, auto_refresh=False, screen=True)
        with live, contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(interval)
                live.update(render(snapshot_now()), refresh=True)
    if unhealthy(latest[0]):
        raise typer.Exit(UNHEALTHY)


@ops_app.command("exporter")
def exporter(
    port: int = typer.Option(9808, help="Serve /metrics on this port."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        "--address",
        help="Listen on this address. The default, 127.0.0.1, serves this host only; "
        "0.0.0.0 serves every interface (in a container, for a published port).",
    ),
) -> None:
    """Serve Prometheus metrics (queues, workers, task outcomes, emails, dead letters).

    Listens on 127.0.0.1 unless --host says otherwise: the metrics name queues, tasks and
    failure reasons, and the endpoint has no authentication.
    """
    app = celery_app()
    with contextlib.suppress(KeyboardInterrupt):
        serve(
            app,
            runtime.session_factory(),
            port,
            host,
            ready=lambda url: console.print(f"serving Prometheus metrics on {url}", markup=False),
        )


@ops_app.command("ping")
def ping(
    local: bool = typer.Option(
        False, "--local", help="Only a worker on this host counts (a container healthcheck)."
    ),
) -> None:
    """Exit 0 when the broker and the database answer and a worker answers a ping, else 1."""
    app = celery_app()
    checks = run_checks(app, runtime.session_factory(), local=local)
    for check in checks:
        mark = Text("ok  ", "green") if check.ok else Text("FAIL", "red")
        console.print(Text.assemble(mark, f" {check.name}: ", literal(check.detail)))
    if not all(check.ok for check in checks):
        raise typer.Exit(UNHEALTHY)
