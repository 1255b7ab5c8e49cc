"""``roadie db upgrade``: create or upgrade the database schema."""

from __future__ import annotations

import click

from roadie.app import Roadie


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create or upgrade the database schema."""
    app = Roadie(ctx.obj.get("url"))
    app.upgrade_schema()
    from roadie.store import Store

    store = Store(app.url, pooler=app.settings.pooler)
    try:
        current, _ = store.schema_revision()
    finally:
        store.dispose()
    click.echo(f"database {store.safe_url} is at schema revision {current}")
