"""Schema creation and upgrade with Alembic, run from inside the installed package.

``upgrade(engine)`` brings the database to the newest revision; it is safe to call from several
processes at once (SQLite: under the database write lock; PostgreSQL: under an advisory lock).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from .tables import METADATA

MIGRATIONS = Path(__file__).with_name("migrations")
#: Any constant: the PostgreSQL advisory lock that serialises concurrent upgrades.
_LOCK_KEY = 0x6B6369  # "kci"


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    config.attributes["metadata"] = METADATA
    return config


def head() -> str:
    """The newest schema revision this version of the engine knows."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The database's schema revision, or ``None`` if the engine's schema is not there yet."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database's schema to ``revision`` (default: the newest)."""
    with engine.connect() as conn:
        conn.execution_options(kci_write=True)  # SQLite: BEGIN IMMEDIATE, one migrator at once
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            if MigrationContext.configure(conn).get_current_revision() != head():
                command.upgrade(_config(conn), revision)
