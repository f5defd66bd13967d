"""Alembic environment: migrations run on the connection `tasks.store.migrate` passes in."""

from __future__ import annotations

from alembic import context

from regrow.tasks.store.database import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")  # ALTER: copy-and-move
with context.begin_transaction():
    context.run_migrations()
