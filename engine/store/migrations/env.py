"""Alembic environment: runs on the connection and metadata that
:func:`kci_engine.store.migrate.upgrade` passes in (no import by package name, so the engine
migrates whatever its import name is)."""

from __future__ import annotations

from alembic import context

attributes = context.config.attributes
context.configure(
    connection=attributes["connection"],
    target_metadata=attributes["metadata"],
    version_table=attributes["version_table"],
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
