"""Alembic environment: runs on the connection :func:`engine.store.migrate.upgrade` passes in."""

from __future__ import annotations

from alembic import context

from engine.store.tables import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
