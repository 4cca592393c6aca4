"""``kci-engine db``: create or upgrade the engine's tables."""

from __future__ import annotations

import click

from ._common import db_option, echo


@click.group()
def db() -> None:
    """Create or upgrade the engine's tables (Alembic migrations, in kci_alembic_version)."""


@db.command("upgrade")
@db_option()
def upgrade(db_url: str) -> None:
    """Bring the schema to the newest revision (safe to run while workers run)."""
    from ..store.db import create_db_engine, database_name, translated
    from ..store.migrate import current, head
    from ..store.migrate import upgrade as migrate

    engine = create_db_engine(db_url, persistent=True)
    try:
        with translated(database_name(engine.url)):
            before = current(engine)
            migrate(engine)
        echo(f"schema: {before or 'none'} -> {head()}")
    finally:
        engine.dispose()
