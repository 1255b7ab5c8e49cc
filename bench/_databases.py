"""The benchmarks' PostgreSQL databases: dropped and made again before a measurement."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa


def fresh_postgres(url: str | sa.URL) -> str:
    """Drop and create ``url``'s database (through the server's ``postgres`` database); return
    its URL for roadie (``postgresql+psycopg``)."""
    parsed = sa.make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{parsed.database}"')
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
