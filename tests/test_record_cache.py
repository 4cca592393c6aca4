"""The SQLite store's kept records (decisions S19): a load of an order this store wrote reads
only the row's version, and never answers with a state the database no longer holds."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest
from kci_engine import Engine, Event
from kci_engine.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    EventNotAllowed,
    StoreError,
)
from kci_engine.store import sql
from kci_engine.store.sql import DEFAULT_RECORD_CACHE, SqlStore
from kci_engine.tooling.testing import COMMIT_DATES, provide_order, test_engine
from sqlmodel import Session

ACK = {"order": {"supplierOrderReference": "S-1"}}


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The order ids whose row the store reads and decodes whole."""
    seen: list[str] = []
    decode = sql._record

    def counting(row: Any) -> Any:
        seen.append(row["order_id"])
        return decode(row)

    monkeypatch.setattr(sql, "_record", counting)
    return seen


def test_an_order_this_store_wrote_is_not_read_whole_again(
    sqlite_url: str, decoded: list[str]
) -> None:
    with SqlStore(sqlite_url) as store:
        engine = test_engine(store)
        order_id = engine.accept_order("provide", provide_order(1))
        engine.apply(order_id, Event.ACKNOWLEDGE, ACK)
        engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        assert engine.order(order_id).status == "IN_PROGRESS"
        assert decoded == []
    with SqlStore(sqlite_url, record_cache=0) as store:  # the same, read whole every time
        engine = Engine(store)
        assert engine.order(order_id).status == "IN_PROGRESS"
        engine.apply(order_id, Event.UPDATE, {"order": {"notes": "booked"}})
        assert decoded == [order_id, order_id]


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "batch"])
def test_a_change_made_by_another_store_is_seen(
    sqlite_url: str, decoded: list[str], batched: bool
) -> None:
    """Another process's (here: another store's) write bumps the row's version: the kept
    record is stale and the order is read whole, so the event applies to the current state
    with the next sequence number."""
    with SqlStore(sqlite_url) as ours, SqlStore(sqlite_url) as theirs:
        engine = test_engine(ours)
        order_id = engine.accept_order("provide", provide_order(1))
        engine.apply(order_id, Event.ACKNOWLEDGE, ACK)
        Engine(theirs).apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        decoded.clear()
        if batched:
            [kcis] = engine.apply_batch([(order_id, Event.DELAY, _delay())])
        else:
            kcis = engine.apply(order_id, Event.DELAY, _delay())
        assert decoded == [order_id]
        assert [k.sequence_number for k in kcis] == [3]
        assert kcis[0].body["provideServiceOrder"]["committedDate"] == COMMIT_DATES["committedDate"]
        assert engine.order(order_id).status == "HELD"
        # What it wrote is kept again: the next event reads the version alone.
        decoded.clear()
        engine.apply(order_id, Event.RESUME)
        assert decoded == []


def _delay() -> dict[str, str]:
    return {"problem_code": "WAYLEAVE_ISSUE", "text": "Wayleave needed"}


def test_a_batch_reads_kept_orders_by_version_alone(sqlite_url: str, decoded: list[str]) -> None:
    with SqlStore(sqlite_url) as store:
        engine = test_engine(store)
        ids = [engine.accept_order("provide", provide_order(n)) for n in range(1, 21)]
        engine.apply_batch([(o, Event.ACKNOWLEDGE, ACK) for o in ids])
        engine.apply_batch([(o, Event.COMMIT, {"order": COMMIT_DATES}) for o in ids])
        assert decoded == []
        assert {engine.order(o).status for o in ids} == {"IN_PROGRESS"}


def test_a_batch_rolled_back_leaves_nothing_kept(sqlite_url: str) -> None:
    """Records are kept only once committed: a batch that fails keeps none of its states,
    and the orders go on from what the database holds."""
    with SqlStore(sqlite_url) as store:
        engine = test_engine(store)
        order_id = engine.accept_order("provide", provide_order(1))
        with pytest.raises(EventNotAllowed):
            engine.apply_batch(
                [(order_id, Event.ACKNOWLEDGE, ACK), (order_id, Event.ACKNOWLEDGE, ACK)]
            )
        assert store._records is not None
        assert store._records.get(order_id)[0].status == "SENT_TO_SUPPLIER"  # type: ignore[index]
        assert engine.order(order_id).status == "SENT_TO_SUPPLIER"
        [kci] = engine.apply(order_id, Event.ACKNOWLEDGE, ACK)
        assert kci.sequence_number == 1


def test_a_joined_view_keeps_nothing_its_caller_may_roll_back(sqlite_url: str) -> None:
    with SqlStore(sqlite_url) as store:
        engine = test_engine(store)
        order_id = engine.accept_order("provide", provide_order(1))
        with Session(store.db) as session:
            test_engine(store.joined(session)).apply(order_id, Event.ACKNOWLEDGE, ACK)
            session.rollback()
        assert engine.order(order_id).status == "SENT_TO_SUPPLIER"
        [kci] = engine.apply(order_id, Event.ACKNOWLEDGE, ACK)
        assert kci.sequence_number == 1


def test_a_conflict_drops_the_kept_record(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that came between this store's load and its save: the save is refused, the
    record no longer kept, and a retry reads the order afresh."""
    with SqlStore(sqlite_url) as ours, SqlStore(sqlite_url) as theirs:
        engine = Engine(ours)
        order_id = engine.accept_order("provide", provide_order(1))
        load = ours.load

        def raced(key: str) -> Any:
            record = load(key)
            Engine(theirs).apply(key, Event.ACKNOWLEDGE, ACK)
            return record

        monkeypatch.setattr(ours, "load", raced)
        with pytest.raises(ConcurrencyConflict):
            engine.apply(order_id, Event.ACKNOWLEDGE, ACK)
        assert ours._records is not None
        assert ours._records.get(order_id) is None
        monkeypatch.undo()
        [kci] = engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        assert kci.sequence_number == 2


def test_the_least_recently_written_are_dropped_beyond_the_size(sqlite_url: str) -> None:
    with SqlStore(sqlite_url, record_cache=2) as store:
        engine = test_engine(store)
        ids = [engine.accept_order("provide", provide_order(n)) for n in range(1, 4)]
        engine.apply(ids[0], Event.ACKNOWLEDGE, ACK)  # written last: kept
        assert store._records is not None
        assert list(store._records.entries) == [ids[2], ids[0]]
        assert [engine.order(o).status for o in ids] == [
            "ACKNOWLEDGED",
            "SENT_TO_SUPPLIER",
            "SENT_TO_SUPPLIER",
        ]


def test_record_cache_setting_is_checked(sqlite_url: str) -> None:
    for bad in (-1, "10", True, 1.5):
        with pytest.raises(ConfigurationError, match="record_cache must be an integer >= 0"):
            SqlStore(sqlite_url, record_cache=bad)  # type: ignore[arg-type]
    with SqlStore(sqlite_url, record_cache=0) as store:
        assert store._records is None
    with SqlStore(sqlite_url) as store:
        assert store._records is not None
        assert store._records.size == DEFAULT_RECORD_CACHE


def test_postgresql_keeps_no_records(postgres_url: str) -> None:
    """On PostgreSQL a load is one prepared round trip either way; nothing is kept."""
    with SqlStore(postgres_url) as store:
        assert store._records is None


def test_a_kept_orders_version_read_that_fails_is_a_store_error(sqlite_url: str) -> None:
    """The version read a kept order's load makes goes through the engine's error handling: a
    failure is a StoreError naming the cause, and the next load works on a fresh connection."""
    path = sqlite_url.removeprefix("sqlite:///")
    with SqlStore(sqlite_url) as store:
        engine = test_engine(store)
        order_id = engine.accept_order("provide", provide_order(1))
        with closing(sqlite3.connect(path)) as other:
            other.execute("ALTER TABLE kci_order RENAME TO kci_order_away")
            other.commit()
            with pytest.raises(StoreError, match="no such table"):
                engine.order(order_id)
            other.execute("ALTER TABLE kci_order_away RENAME TO kci_order")
            other.commit()
        assert engine.order(order_id).status == "SENT_TO_SUPPLIER"
