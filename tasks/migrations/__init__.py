"""Alembic migrations of the monitoring store (`tasks.migrate` runs them; `regrow db upgrade`)."""
