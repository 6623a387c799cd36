"""`clientflow templates list` and `clientflow templates preview NAME`: the email templates
(shipped, and CLIENTFLOW_TEMPLATE_DIR's), their languages and variables, and one rendered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from models.settings import get_settings
from services.mail.overview import ignored_folders, overridden_layouts, overview
from services.mail.preview import find_client, preview_email, sample_client
from services.mail.render import RenderedEmail, configured_folders
from workers.cli.common import console, database
from workers.ops.render import literal

templates_app = typer.Typer(
    help="Email templates: shipped, overridden (CLIENTFLOW_TEMPLATE_DIR), and previews.",
    no_args_is_help=True,
)


@templates_app.command("list")
def list_templates() -> None:
    """Every template in every language: where it comes from and the variables it uses."""
    folders = configured_folders()
    table = Table(title="Email templates, searched in " + ", then ".join(map(str, folders)))
    for column in ("template", "language", "from", "variables"):
        table.add_column(column, overflow="fold")
    for row in overview(folders):
        variables = f"cannot read: {row.problem}" if row.problem else ", ".join(row.variables)
        table.add_row(row.name, row.language, row.origin, literal(variables))
    console.print(table)
    layouts = overridden_layouts(folders)
    if layouts:
        console.print("Layouts overridden (used by every template that extends or includes them): "
                      + ", ".join(layouts), markup=False)  # fmt: skip
    ignored = ignored_folders(folders)
    if ignored:
        console.print("Ignored, not a language code: " + ", ".join(ignored), markup=False)


@templates_app.command("preview")
def preview(
    name: str = typer.Argument(..., help="The template, e.g. client_signup."),
    client_id: str | None = typer.Option(
        None, "--client", help="A client id in the database; default a built-in sample client."
    ),
    language: str | None = typer.Option(
        None, "--language", help="Instead of the client's own: fr, french, de, pt_BR, ..."
    ),
    html: Path | None = typer.Option(None, "--html", help="Write the HTML part to this file."),
    context_file: Path | None = typer.Option(
        None, "--context", help="A JSON object of variables, over the samples."
    ),
) -> None:
    """Render NAME as a client would get it: subject and text part (the HTML to --html).

    Invoice, payment and notification variables are samples; the client's name, address,
    billing contact and language are the real ones with --client.
    """
    extra = _read_context(context_file) if context_file is not None else None
    company = get_settings().company
    if client_id is None:
        client = sample_client()
        rendered = preview_email(name, client, company, language=language, extra=extra)
        who = "the sample client"
    else:
        with database() as session:
            found = find_client(session, client_id)
            if found is None:
                problem = f"no client {client_id!r} in the database"
                raise typer.BadParameter(problem, param_hint="--client")
            rendered = preview_email(name, found, company, language=language, extra=extra)
            who = f"client {found.id} ({found.language or 'no language set'})"
    _show(rendered, who, html)


def _read_context(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--context") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path} holds no JSON object", param_hint="--context")
    return value


def _show(rendered: RenderedEmail, who: str, html: Path | None) -> None:
    # typer.echo, not the console: a template's text is shown as it is, never as Rich markup.
    typer.echo(f"# {rendered.variant} for {who}, formatted for locale {rendered.locale}")
    typer.echo(f"Subject: {rendered.subject}")
    typer.echo("")
    typer.echo(rendered.text, nl=not rendered.text.endswith("\n"))
    if html is not None:
        html.write_text(rendered.html, encoding="utf-8")
        typer.echo(f"# HTML part written to {html}")
