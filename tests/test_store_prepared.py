"""PostgreSQL's per-event statements as named prepared statements on libpq (store/prepared.py):
the same answers as through a cursor, and the cases a prepared statement can trip on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kci_engine import Engine, OrderType
from kci_engine.errors import ConcurrencyConflict, OrderNotFound, StoreError
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import provide_order

from tests.conftest import _fresh_postgres_database

pytest.importorskip("psycopg")


@pytest.fixture
def pg_url(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _fresh_postgres_database(postgres_url, request.node.name)


def _driver(store: SqlStore) -> object:
    return store._dbapi().driver_connection


def test_events_run_as_named_prepared_statements(pg_url: str) -> None:
    """The load and the event's write are prepared once under the store's names and reused."""
    with SqlStore(pg_url) as store:
        engine = Engine(store)
        order_id = engine.accept_order(OrderType.PROVIDE, provide_order(1))
        engine.apply(order_id, "acknowledge", {"order": {"supplierOrderReference": "S-1"}})
        engine.apply(order_id, "warn", {"problem_code": "NETWORK_ISSUE", "text": "t"})
        rows = (
            _driver(store)  # type: ignore[attr-defined]
            .execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'kci_%'")
            .fetchall()
        )
        assert sorted(name for (name,) in rows) == ["kci_load", "kci_save_1"]
        assert [kci.sequence_number for kci in store.kcis(order_id)] == [1, 2]


def test_a_discarded_statement_is_prepared_again(pg_url: str) -> None:
    """DISCARD ALL (a pooler's reset) drops the prepared statements: the next event prepares
    them again instead of failing."""
    with SqlStore(pg_url) as store:
        engine = Engine(store)
        order_id = engine.accept_order(OrderType.PROVIDE, provide_order(1))
        engine.apply(order_id, "acknowledge", {"order": {"supplierOrderReference": "S-1"}})
        _driver(store).execute("DISCARD ALL")  # type: ignore[attr-defined]
        kcis = engine.apply(order_id, "warn", {"problem_code": "NETWORK_ISSUE", "text": "t"})
        assert kcis[0].sequence_number == 2


def test_without_prepared_statements_the_cursor_gives_the_same_answers(pg_url: str) -> None:
    """A connection with psycopg's prepare_threshold=None (a pooler that cannot keep prepared
    statements) prepares nothing and still loads, saves and detects a stale version."""
    with SqlStore(pg_url) as store:
        _driver(store).prepare_threshold = None  # type: ignore[attr-defined]
        engine = Engine(store)
        order_id = engine.accept_order(OrderType.PROVIDE, provide_order(1))
        engine.apply(order_id, "acknowledge", {"order": {"supplierOrderReference": "S-1"}})
        stale = store.load(order_id)
        engine.apply(order_id, "warn", {"problem_code": "NETWORK_ISSUE", "text": "t"})
        with pytest.raises(ConcurrencyConflict):
            store.save(stale, [], engine.store.events(order_id)[-1])
        with pytest.raises(OrderNotFound):
            store.load("no-such-order")
        rows = (
            _driver(store)  # type: ignore[attr-defined]
            .execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'kci_%'")
            .fetchone()
        )
        assert rows == (0,)


def test_a_lost_connection_is_a_store_error_and_the_next_event_reconnects(pg_url: str) -> None:
    """The server ending the connection between events: StoreError (nothing written), and the
    next event prepares its statements on a new connection; sequence numbers stay gapless."""
    import psycopg

    with SqlStore(pg_url) as store:
        engine = Engine(store)
        order_id = engine.accept_order(OrderType.PROVIDE, provide_order(1))
        engine.apply(order_id, "acknowledge", {"order": {"supplierOrderReference": "S-1"}})
        backend = _driver(store).info.backend_pid  # type: ignore[attr-defined]
        dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        with pytest.raises(StoreError, match="cannot reach the server"):
            engine.apply(order_id, "warn", {"problem_code": "NETWORK_ISSUE", "text": "t"})
        kcis = engine.apply(order_id, "warn", {"problem_code": "NETWORK_ISSUE", "text": "t"})
        assert [kci.sequence_number for kci in store.kcis(order_id)] == [1, 2]
        assert kcis[0].sequence_number == 2
