"""Alembic environment: runs roadie's migrations on the connection roadie hands it."""

from __future__ import annotations

from alembic import context
from roadie.models import VERSION_TABLE, add_dialect_options, metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # run by the alembic CLI: build an engine from the URL
    import sqlalchemy as sa

    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as connection:
        add_dialect_options(connection.dialect.name)
        context.configure(
            connection=connection, target_metadata=metadata, version_table=VERSION_TABLE
        )
        context.run_migrations()
else:
    add_dialect_options(connection.dialect.name)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
