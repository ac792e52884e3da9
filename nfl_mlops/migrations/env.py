"""Alembic environment: runs on the connection that `nfl_mlops.db.migrate` hands over (no URL, no logging
configuration of its own)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
