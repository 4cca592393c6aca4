"""Schema creation and upgrade with Alembic, run from inside the installed package.

The engine keeps its own migration history in its own version table, ``kci_alembic_version``, so
it lives beside a host application's Alembic (which uses ``alembic_version``) in one database,
migrated in either order. A host keeps the engine's tables out of its own autogenerate with
:func:`include_name` (docs/getting-started.md, "Your own Alembic").

``upgrade(engine)`` brings the database to the newest revision. It first reads the revision
without a write lock, so a database already up to date is never locked; only when it is behind
does it migrate, safely from several processes at once (SQLite: under the database write lock;
PostgreSQL: under an advisory lock).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from .tables import METADATA

MIGRATIONS = Path(__file__).with_name("migrations")
#: The engine's own Alembic version table (a host's stays ``alembic_version``).
VERSION_TABLE = "kci_alembic_version"
#: Every table the engine owns starts with this.
TABLE_PREFIX = "kci_"
#: Any constant: the PostgreSQL advisory lock that serialises concurrent upgrades.
_LOCK_KEY = 0x6B6369  # "kci"


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    config.attributes["metadata"] = METADATA
    config.attributes["version_table"] = VERSION_TABLE
    return config


def _revisions() -> set[str]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def head() -> str:
    """The newest schema revision this version of the engine knows."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    revision = ScriptDirectory.from_config(config).get_current_head()
    assert revision is not None
    return revision


def _revision(conn: Connection) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def current(engine: Engine) -> str | None:
    """The database's schema revision, or ``None`` if the engine's schema is not there yet.
    Reads only: takes no write lock."""
    with engine.connect() as conn:
        revision = _revision(conn) or _legacy_revision(conn)
        conn.rollback()
        return revision


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database's schema to ``revision`` (default: the newest); a no-op, without
    any write lock, when it is there already."""
    if revision == "head" and current(engine) == head():
        return
    with engine.connect() as conn:
        conn.execution_options(kci_write=True)  # SQLite: BEGIN IMMEDIATE, one migrator at once
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            _adopt_legacy_revision(conn)
            if _revision(conn) != head() or revision != "head":
                command.upgrade(_config(conn), revision)


def _legacy_revision(conn: Connection) -> str | None:
    """The engine's revision in the shared ``alembic_version`` table, where engine 0.1 kept it,
    if the engine's tables are there and the revision is one of the engine's."""
    inspector = sa.inspect(conn)
    if not inspector.has_table("alembic_version") or not inspector.has_table("kci_order"):
        return None
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    ours = [row for row in rows if row in _revisions()]
    return ours[0] if len(ours) == 1 else None


def _adopt_legacy_revision(conn: Connection) -> None:
    """Move the engine's revision from ``alembic_version`` to its own table (once), leaving the
    shared table to the host application."""
    if _revision(conn) is not None:
        return
    legacy = _legacy_revision(conn)
    if legacy is None:
        return
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    context.stamp(ScriptDirectory.from_config(_config(conn)), legacy)
    conn.execute(sa.text("DELETE FROM alembic_version WHERE version_num = :v"), {"v": legacy})


def include_name(name: str | None, type_: str, parent_names: object = None) -> bool:
    """For a host application's Alembic ``include_name``: leave out the engine's tables (and its
    version table), which the engine migrates itself::

        from kci_engine.store.migrate import include_name

        context.configure(connection=connection, target_metadata=metadata,
                          include_name=include_name)

    Returns:
        ``False`` for a table whose name starts with ``kci_``, ``True`` for anything else.
    """
    return not (type_ == "table" and name is not None and name.startswith(TABLE_PREFIX))
