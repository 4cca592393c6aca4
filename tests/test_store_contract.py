"""The store contract, written once and run on every backend: memory, a SQLite file, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kci_engine import Engine, Event
from kci_engine.errors import (
    ConcurrencyConflict,
    InvalidEventData,
    OrderExists,
    OrderNotFound,
    RefusedEvent,
)
from kci_engine.store import MemoryStore, Store
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import (
    COMMIT_DATES,
    SteppingClock,
    assert_valid_stream,
    provide_order,
    sequential_ids,
    unsolicited_cease_order,
)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = next(iter(_pg(request)))
    sql = SqlStore(url)
    yield sql
    sql.close()


def _pg(request: pytest.FixtureRequest) -> Iterator[str]:
    from tests.conftest import _fresh_postgres_database

    base = request.getfixturevalue("postgres_url")
    gen = _fresh_postgres_database(base, request.node.name)
    url = next(gen)
    request.addfinalizer(lambda: next(gen, None))
    yield url


def _engine(store: Store) -> Engine:
    return Engine(store, clock=SteppingClock(), new_id=sequential_ids())


def _committed(engine: Engine, n: int = 1) -> str:
    order_id = engine.accept_order("provide", provide_order(n))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"S{n}"}})
    engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
    return order_id


def test_round_trip_keeps_record_kcis_and_event_log(store: Store) -> None:
    """What the engine saves is what it loads: record, KCIs in order, and the event log."""
    engine = _engine(store)
    order_id = _committed(engine)
    engine.apply(order_id, Event.AMENDMENT_RECEIVED, {"amendment_id": 5})
    record = store.load(order_id)
    assert record.status == "PENDING_AMENDMENT"
    assert record.return_stack == ["IN_PROGRESS"]
    assert [(a.id, a.reference) for a in record.amendments] == [(5, None)]
    assert record.next_sequence == 3
    assert record.document["committedDate"] == COMMIT_DATES["committedDate"]
    assert record.last_issued_on is not None
    kcis = store.kcis(order_id)
    assert [k.reason_code.value for k in kcis] == ["ACKNOWLEDGED", "COMMITTED"]
    assert_valid_stream(kcis)
    log = store.events(order_id)
    assert [(e.event, e.status_before, e.status_after) for e in log] == [
        ("received", "", "SENT_TO_SUPPLIER"),
        ("acknowledge", "SENT_TO_SUPPLIER", "ACKNOWLEDGED"),
        ("commit", "ACKNOWLEDGED", "IN_PROGRESS"),
        ("amendment_received", "IN_PROGRESS", "PENDING_AMENDMENT"),
    ]
    assert log[1].kci_ids == (kcis[0].kci_id,)
    assert log[3].kci_ids == ()
    assert log[3].data.amendment_id == 5


def test_load_returns_a_private_copy(store: Store) -> None:
    engine = _engine(store)
    order_id = _committed(engine)
    record = store.load(order_id)
    record.status = "COMPLETED"
    record.return_stack.append("HELD")
    assert store.load(order_id).status == "IN_PROGRESS"
    assert store.load(order_id).return_stack == []


def test_stale_version_is_a_conflict_and_writes_nothing(store: Store) -> None:
    """A writer that read an old version loses: typed conflict, no KCI, no sequence number."""
    engine = _engine(store)
    order_id = _committed(engine)
    stale = store.load(order_id)
    engine.apply(order_id, Event.WARN, {"problem_code": "NETWORK_ISSUE"})
    before, logged = store.kcis(order_id), store.events(order_id)
    with pytest.raises(ConcurrencyConflict) as caught:
        store.save(stale, [], logged[-1]._replace(event_id=None))
    assert caught.value.order_id == order_id
    assert store.kcis(order_id) == before
    assert store.events(order_id) == logged
    # With a KCI too (on PostgreSQL the inserts ride on the UPDATE: none may land without it).
    late = before[-1]._replace(kci_id="late", sequence_number=before[-1].sequence_number + 1)
    with pytest.raises(ConcurrencyConflict):
        store.save(stale, [late], logged[-1]._replace(event_id=None, kci_ids=("late",)))
    assert store.kcis(order_id) == before
    assert store.events(order_id) == logged
    assert store.load(order_id).version == stale.version + 1


def test_duplicate_order_is_refused(store: Store) -> None:
    engine = _engine(store)
    engine.accept_order("provide", provide_order(1))
    with pytest.raises(OrderExists):
        engine.accept_order("provide", provide_order(1))
    assert list(store.order_ids()) == ["TENANT1:1"]


def test_unknown_order(store: Store) -> None:
    for call in (store.load, store.kcis, store.events):
        with pytest.raises(OrderNotFound):
            call("nope")
    assert store.applied("nope", "x") is None


def test_event_id_makes_apply_idempotent(store: Store) -> None:
    engine = _engine(store)
    order_id = _committed(engine)
    first = engine.apply(order_id, Event.WARN, {"problem_code": "NETWORK_ISSUE", "event_id": "w1"})
    again = engine.apply(order_id, Event.WARN, {"problem_code": "NETWORK_ISSUE", "event_id": "w1"})
    assert [k.kci_id for k in again] == [k.kci_id for k in first]
    assert again[0].body == first[0].body
    assert len(store.kcis(order_id)) == 3
    assert len(store.events(order_id)) == 4
    none = engine.apply(order_id, Event.AMENDMENT_RECEIVED, {"amendment_id": 1, "event_id": "a1"})
    assert none == []
    assert (
        engine.apply(order_id, Event.AMENDMENT_RECEIVED, {"amendment_id": 1, "event_id": "a1"})
        == []
    )


def test_refused_event_writes_nothing(store: Store) -> None:
    engine = _engine(store)
    order_id = _committed(engine)
    version = store.load(order_id).version
    with pytest.raises(RefusedEvent):
        engine.apply(order_id, Event.DELAY, {"event_id": "d1"})
    assert store.load(order_id).version == version
    assert len(store.kcis(order_id)) == 2
    assert store.applied(order_id, "d1") is None


def test_unsolicited_cease_round_trip(store: Store) -> None:
    engine = _engine(store)
    [created] = engine.create_unsolicited_cease(unsolicited_cease_order(), event_id="c1")
    assert created.reason_code.value == "CREATED"
    assert engine.create_unsolicited_cease(unsolicited_cease_order(), event_id="c1") == [created]
    assert store.kcis("UC-4001") == [created]


def test_whole_lifecycle_bodies_identical_across_backends(store: Store) -> None:
    """The same lifecycle on any backend yields byte-identical KCI bodies (same clock, ids)."""
    from kci_engine.tooling.demo import play

    played = list(play(_engine(store)))
    reference = list(play(_engine(MemoryStore())))
    assert [k.json() for p in played for k in p.kcis] == [
        k.json() for p in reference for k in p.kcis
    ]
    for one in played:
        assert [k.json() for k in store.kcis(one.order_id)] == [k.json() for k in one.kcis]


def test_batch_is_all_or_nothing(store: Store) -> None:
    """A batch lands whole, or, when one item is refused, not at all."""
    engine = _engine(store)
    order_id = _committed(engine)
    warn = {"problem_code": "NETWORK_ISSUE"}
    results = engine.apply_batch([(order_id, Event.WARN, warn), (order_id, Event.WARN, warn)])
    assert [k.sequence_number for r in results for k in r] == [3, 4]
    with pytest.raises(RefusedEvent) as caught:
        engine.apply_batch(
            [(order_id, Event.WARN, warn), (order_id, Event.DELAY, None), (order_id, "warn", warn)]
        )
    assert "batch item 1" in "".join(caught.value.__notes__)
    assert [k.sequence_number for k in store.kcis(order_id)] == [1, 2, 3, 4]
    assert store.load(order_id).next_sequence == 5
    assert len(store.events(order_id)) == 5
    results = engine.apply_batch([(order_id, Event.WARN, warn)])
    assert results[0][0].sequence_number == 5


def test_a_large_batch_over_many_orders_with_event_ids(store: Store) -> None:
    """A batch longer than the SQL store reads ahead (500 orders) and writes at once (256
    events): every order gets its KCI in sequence, an event id seen earlier in the same batch
    answers that item's KCIs (the KCIs written so far are visible inside the batch), and every
    event is logged once."""
    engine = _engine(store)
    ids = [engine.accept_order("provide", provide_order(n)) for n in range(1, 601)]
    items: list[tuple[str, Event, dict[str, object]]] = [
        (o, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}, "event_id": f"a-{o}"})
        for o in ids
    ]
    items.insert(300, items[7])  # a retried item, 293 items after the first one
    items.append((ids[599], Event.ACKNOWLEDGE, items[-1][2]))  # retried at once
    items.append((ids[8], Event.COMMIT, {"order": COMMIT_DATES}))  # read back in the batch
    results = engine.apply_batch(items)
    assert results[300] == results[7]
    assert results[-2] == results[-3]
    assert [k.sequence_number for k in results[-1]] == [2]
    for order_id in (ids[0], ids[7], ids[599]):
        assert [k.sequence_number for k in store.kcis(order_id)] == [1]
        assert [e.event for e in store.events(order_id)] == ["received", "acknowledge"]
    assert store.load(ids[8]).status == "IN_PROGRESS"  # committed
    assert all(store.load(o).next_sequence == 2 for o in ids if o != ids[8])


def test_an_event_id_reused_for_another_event_is_refused(store: Store) -> None:
    """Answering a different event with the first one's KCIs would drop it silently."""
    engine = _engine(store)
    order_id = _committed(engine)
    engine.apply(order_id, Event.WARN, {"problem_code": "NETWORK_ISSUE", "event_id": "e-1"})
    with pytest.raises(InvalidEventData, match="already used for event 'warn', not 'delay'"):
        engine.apply(order_id, Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE", "event_id": "e-1"})
    assert store.load(order_id).status == "IN_PROGRESS"
    assert len(store.kcis(order_id)) == 3
