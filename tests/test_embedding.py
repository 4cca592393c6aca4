"""The engine as a guest in a host application's process and database: its own Alembic version
table, migrating in either order beside the host's own migrations, out of the host's
autogenerate, and a database migrated by engine 0.1 (which shared ``alembic_version``) adopted."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from kci_engine import Engine
from kci_engine.store import migrate
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import provide_order

HOST_ENV = """\
from alembic import context

from host_models import METADATA
from kci_engine.store.migrate import include_name

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, include_name=include_name)
with context.begin_transaction():
    context.run_migrations()
"""
HOST_MODELS = """\
import sqlalchemy as sa

METADATA = sa.MetaData()
WIDGETS = sa.Table("widgets", METADATA, sa.Column("id", sa.Integer, primary_key=True))
"""
HOST_REVISION = '''\
"""widgets"""
import sqlalchemy as sa
from alembic import op

revision = "48c7c2d51edf"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("widgets")
'''


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host application with its own models and its own Alembic migrations."""
    app = tmp_path / "host"
    (app / "migrations" / "versions").mkdir(parents=True)
    (app / "migrations" / "env.py").write_text(HOST_ENV)
    (app / "migrations" / "script.py.mako").write_text("")
    (app / "migrations" / "versions" / "48c7c2d51edf_widgets.py").write_text(HOST_REVISION)
    (app / "host_models.py").write_text(HOST_MODELS)
    monkeypatch.syspath_prepend(str(app))
    return app


def host_upgrade(host: Path, engine: sa.Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(host / "migrations"))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def versions(engine: sa.Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars().all()
            for table in ("alembic_version", "kci_alembic_version")
            if sa.inspect(conn).has_table(table)
        }


def use_the_engine(url: str, order: int = 1) -> None:
    with SqlStore(url) as store:
        engine = Engine(store)
        engine.accept_order("provide", provide_order(order))


@pytest.mark.parametrize("host_first", [True, False], ids=["host-first", "engine-first"])
def test_host_and_engine_migrate_one_database_in_either_order(
    host: Path, tmp_path: Path, host_first: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    db = sa.create_engine(url)
    if host_first:
        host_upgrade(host, db)
        use_the_engine(url)
    else:
        use_the_engine(url)
        host_upgrade(host, db)
    host_upgrade(host, db)  # both again: nothing to do, nothing refused
    use_the_engine(url, order=2)
    assert versions(db) == {
        "alembic_version": ["48c7c2d51edf"],
        "kci_alembic_version": [migrate.head()],
    }
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM kci_order")).scalar() == 2
    db.dispose()


def _autogenerate(db: sa.Engine, **opts: Any) -> list[Any]:
    import host_models  # type: ignore[import-not-found]

    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(context, host_models.METADATA))


def test_the_hosts_autogenerate_leaves_the_engines_tables_alone(host: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    db = sa.create_engine(url)
    host_upgrade(host, db)
    use_the_engine(url)
    assert _autogenerate(db, include_name=migrate.include_name) == []
    # Without the filter the host's autogenerate would drop every kci_* table: the test bites.
    dropped = {diff[1].name for diff in _autogenerate(db) if diff[0] == "remove_table"}
    assert {"kci_order", "kci_outbox", "kci_event", "kci_alembic_version"} <= dropped
    db.dispose()


def test_include_name_keeps_everything_but_the_engines_tables() -> None:
    assert migrate.include_name("widgets", "table") is True
    assert migrate.include_name("kci_order", "table") is False
    assert migrate.include_name("kci_alembic_version", "table") is False
    assert migrate.include_name("kci_order_idx", "index") is True
    assert migrate.include_name(None, "schema") is True


def test_a_database_migrated_by_engine_0_1_is_adopted_into_its_own_version_table(
    tmp_path: Path,
) -> None:
    """Engine 0.1 recorded its revision in the shared alembic_version: the next start moves it
    to kci_alembic_version and leaves alembic_version to the host."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = sa.create_engine(url)
    with db.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(migrate.MIGRATIONS))
        config.attributes.update(
            connection=conn, metadata=migrate.METADATA, version_table="alembic_version"
        )
        command.upgrade(config, "0001")
    assert versions(db) == {"alembic_version": ["0001"]}
    assert migrate.current(db) == "0001"
    use_the_engine(url)
    assert versions(db) == {"alembic_version": [], "kci_alembic_version": [migrate.head()]}
    db.dispose()


def test_an_up_to_date_database_is_checked_without_a_write_lock(tmp_path: Path) -> None:
    """Opening a current database must not wait for another process's write lock."""
    import sqlite3

    path = tmp_path / "busy.db"
    use_the_engine(f"sqlite:///{path}")
    holder = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        db = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})
        migrate.upgrade(db)  # would raise "database is locked" if it took the write lock
        assert migrate.current(db) == migrate.head()
        db.dispose()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_host_env_script_is_valid_python() -> None:
    compile(textwrap.dedent(HOST_ENV), "env.py", "exec")
