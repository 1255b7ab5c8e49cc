"""``roadie attachments`` and ``roadie attachment get``: the files kept with a task."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from roadie.cli.common import console, new_table, with_app

if TYPE_CHECKING:
    from roadie.app import Roadie


@click.command()
@click.argument("task_id", type=int)
@with_app
def attachments(app: Roadie, task_id: int) -> None:
    """List the attachments of a task."""
    table = new_table("name", "size", "media type", "checksum", "created")
    for item in app.list_attachments(task_id):
        table.add_row(item.name, f"{item.size:,}", item.media_type, item.checksum[:19] + "…",
                      item.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    console().print(table)


@click.group()
def attachment() -> None:
    """Read a task's attachments."""


@attachment.command("get")
@click.argument("task_id", type=int)
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: standard output).")
@with_app
def attachment_get(app: Roadie, task_id: int, name: str, output: Path | None) -> None:
    """Write attachment NAME of task TASK_ID to a file or standard output."""
    with app.open_attachment(task_id, name) as source:
        if output is None:
            shutil.copyfileobj(source, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            try:
                with output.open("wb") as target:
                    shutil.copyfileobj(source, target)
            except OSError as exc:
                raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
            click.echo(f"wrote {output}", err=True)
