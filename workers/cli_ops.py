"""`clientflow ops`: status of queues, workers, tasks and failures; Prometheus; health ping."""

from __future__ import annotations

import contextlib
import time

import typer
from celery import Celery
from rich.live import Live

from workers import runtime
from workers.cli_common import console
from workers.ops.exporter import serve
from workers.ops.ping import run_checks
from workers.ops.render import render
from workers.ops.snapshot import Snapshot
from workers.ops.status import build_snapshot
from workers.settings import get_settings

ops_app = typer.Typer(
    help="For the people on call: what is healthy, what is stuck, what failed and why.",
    no_args_is_help=True,
)


def _celery_app() -> Celery:
    # Imported on use: the other subcommands need no Celery app. The embedded filesystem
    # broker reads folders that exist only once something used it.
    from workers.app import app, prepare_embedded_broker

    prepare_embedded_broker(get_settings())
    return app


@ops_app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="One JSON object (schema in the README)."),
    watch: bool = typer.Option(False, "--watch", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(2.0, help="Seconds between refreshes with --watch."),
) -> None:
    """Queues, workers, task outcomes of the last hour, dead letters, emails, invoice run."""
    app = _celery_app()

    def snapshot_now() -> Snapshot:
        return build_snapshot(app, runtime.session_factory())

    if as_json:
        typer.echo(snapshot_now().model_dump_json(indent=2))
        return
    if not watch:
        console.print(render(snapshot_now()))
        return
    # The whole screen, like top: the tables are taller than a terminal, and Live can only
    # redraw in place what fits on it.
    live = Live(render(snapshot_now()), console=console, auto_refresh=False, screen=True)
    with live, contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(interval)
            live.update(render(snapshot_now()), refresh=True)


@ops_app.command("exporter")
def exporter(
    port: int = typer.Option(9808, help="Serve /metrics on this port."),
    address: str = typer.Option("0.0.0.0", help="Listen on this address."),
) -> None:
    """Serve Prometheus metrics (queues, workers, task outcomes, emails, dead letters)."""
    app = _celery_app()
    console.print(f"serving Prometheus metrics on http://{address}:{port}/metrics")
    with contextlib.suppress(KeyboardInterrupt):
        serve(app, runtime.session_factory(), port, address)


@ops_app.command("ping")
def ping(
    local: bool = typer.Option(
        False, "--local", help="Only a worker on this host counts (a container healthcheck)."
    ),
) -> None:
    """Exit 0 when the broker and the database answer and a worker answers a ping, else 1."""
    app = _celery_app()
    checks = run_checks(app, runtime.session_factory(), local=local)
    for check in checks:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: {check.detail}", highlight=False)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)
