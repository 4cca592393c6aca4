"""Shared fixtures: engines with a deterministic clock and ids, and real databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kci_engine import Engine
from kci_engine.tooling.testing import test_engine

from tests.pgserver import PostgresUnavailable, postgres_server

# The scenario plugin, loaded here rather than through its pytest11 entry point (blocked in
# pyproject's addopts): entry-point plugins are imported before pytest-cov starts measuring,
# which would leave every module of the package counted as unexecuted at import.
pytest_plugins = ["kci_engine.tooling.pytest_plugin"]


@pytest.fixture
def engine() -> Engine:
    """An in-memory engine with a deterministic clock and KCI ids."""
    return test_engine()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A URL of a real PostgreSQL server (started for the session unless one is given)."""
    given = os.environ.get("KCI_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL of a new SQLite database file."""
    return f"sqlite:///{tmp_path / 'kci.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each real backend in turn: a new SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kci.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    yield from _fresh_postgres_database(base, request.node.name)


def _fresh_postgres_database(base: str, name: str) -> Iterator[str]:
    import re

    import sqlalchemy as sa

    db = "t_" + re.sub(r"[^a-z0-9]+", "_", name.lower())[:50] + f"_{os.getpid()}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{db}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + db
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.dispose()
