"""Alembic migrations of the monitoring store (`tasks.store.migrate` runs them; `regrow db upgrade`)."""
