"""``roadie prune``: delete the tasks that ended long ago."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from roadie.cli.common import with_app

if TYPE_CHECKING:
    from roadie.app import Roadie


@click.command()
@click.option("--older-than", "older_than", required=True,
              help="Age since the task ended: 30d, 12h, 90m, 45s, 2w.")
@click.option("--status", "statuses", multiple=True,
              help="successful, failed or cancelled (repeatable; default all three).")
@with_app
def prune(app: Roadie, older_than: str, statuses: tuple[str, ...]) -> None:
    """Delete ended tasks older than --older-than, with their attempts and attachments."""
    from roadie.retention import parse_duration

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    try:
        count = app.prune(age, statuses=statuses or None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    click.echo(f"{count} ended task(s) deleted")
