"""MemoryStore against the Store interface, called directly; and the records it keeps."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kci_engine import Engine, Event
from kci_engine.core.codes import OrderStatus, OrderType, ReasonCode
from kci_engine.core.events import EventData, EventEntry
from kci_engine.core.records import Kci, OrderRecord, RequestRef
from kci_engine.errors import ConcurrencyConflict, OrderExists, OrderNotFound
from kci_engine.store import MemoryStore, Store
from kci_engine.tooling.testing import EPOCH, provide_order

S = OrderStatus
P = OrderType.PROVIDE


def record(order_id: str = "T:1", status: str = S.SENT_TO_SUPPLIER) -> OrderRecord:
    document = {**provide_order(), "status": status}
    return OrderRecord(order_id, P, status, document)


def kci(order_id: str, number: int, reason: ReasonCode = ReasonCode.UPDATE) -> Kci:
    return Kci(
        kci_id=f"k-{order_id}-{number}",
        order_id=order_id,
        sequence_number=number,
        reason_code=reason,
        status=S.ACKNOWLEDGED,
        issued_on=datetime(2026, 11, 23, 9, 0, tzinfo=UTC) + timedelta(seconds=number),
        body={"sequenceNumber": number},
        event="update",
    )


def entry(
    order: OrderRecord, event: str = "update", event_id: str | None = None, *kcis: Kci
) -> EventEntry:
    return EventEntry(
        order.order_id,
        event,
        event_id,
        order.status,
        order.status,
        tuple(k.kci_id for k in kcis),
        EventData(event_id=event_id),
        EPOCH,
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def test_memory_store_implements_the_store_interface(store: MemoryStore) -> None:
    assert isinstance(store, Store)


def test_create_stores_version_1_with_its_kcis_and_log(store: MemoryStore) -> None:
    new = record()
    first = kci("T:1", 1)
    store.create(new, [first], entry(new, "create", "ev-0", first))
    loaded = store.load("T:1")
    assert loaded.version == 1
    assert (loaded.order_id, loaded.status, loaded.document) == ("T:1", new.status, new.document)
    assert store.kcis("T:1") == [first]
    assert [e.event for e in store.events("T:1")] == ["create"]
    assert store.applied("T:1", "ev-0") == [first]


def test_create_refuses_an_existing_order_and_keeps_the_first(store: MemoryStore) -> None:
    first = record()
    store.create(first, [], entry(first))
    second = record(status=S.ACKNOWLEDGED)
    with pytest.raises(OrderExists) as info:
        store.create(second, [kci("T:1", 1)], entry(second))
    assert info.value.order_id == "T:1"
    assert store.load("T:1").status == S.SENT_TO_SUPPLIER
    assert store.kcis("T:1") == []
    assert len(store.events("T:1")) == 1


def test_load_returns_a_copy_whose_changes_are_not_stored(store: MemoryStore) -> None:
    new = record()
    new.return_stack.append(S.IN_PROGRESS)
    new.amendments.append(RequestRef(5, "A-5"))
    new.cancellation = RequestRef(9)
    store.create(new, [], entry(new))
    loaded = store.load("T:1")
    loaded.status = S.COMPLETED
    loaded.return_stack.append(S.HELD)
    loaded.amendments[0].id = 6
    loaded.amendments.append(RequestRef(7))
    assert loaded.cancellation is not None
    loaded.cancellation.id = 10
    loaded.document = {}
    again = store.load("T:1")
    assert again.status == S.SENT_TO_SUPPLIER
    assert again.return_stack == [S.IN_PROGRESS]
    assert [(a.id, a.reference) for a in again.amendments] == [(5, "A-5")]
    assert again.cancellation == RequestRef(9)
    assert again.document["id"] == 1001


def test_create_keeps_a_copy_of_the_callers_record(store: MemoryStore) -> None:
    new = record()
    store.create(new, [], entry(new))
    new.status = S.COMPLETED
    new.return_stack.append(S.HELD)
    assert store.load("T:1").status == S.SENT_TO_SUPPLIER
    assert store.load("T:1").return_stack == []


def test_changing_the_engines_order_document_in_place_is_not_stored() -> None:
    """Store.load may share the document (the engine never edits one in place); the public
    Engine.order() hands out a deep copy, so a caller's edits cannot reach the store."""
    from kci_engine.tooling.testing import provide_order, test_engine

    engine = test_engine()
    order_id = engine.accept_order("provide", provide_order())
    engine.order(order_id).document["serviceOrderItem"]["serviceCharacteristics"].clear()
    engine.order(order_id).document["notes"] = "changed in place"
    stored = engine.store.load(order_id).document
    assert "notes" not in stored
    assert stored["serviceOrderItem"]["serviceCharacteristics"] != []


def test_save_bumps_the_version_and_appends_kcis_and_log(store: MemoryStore) -> None:
    new = record()
    store.create(new, [kci("T:1", 1)], entry(new))
    loaded = store.load("T:1")
    loaded.status = S.ACKNOWLEDGED
    second = kci("T:1", 2)
    store.save(loaded, [second], entry(loaded, "acknowledge", "ev-1", second))
    assert loaded.version == 2
    again = store.load("T:1")
    assert (again.version, again.status) == (2, S.ACKNOWLEDGED)
    assert [k.sequence_number for k in store.kcis("T:1")] == [1, 2]
    assert [e.event for e in store.events("T:1")] == ["update", "acknowledge"]
    assert store.applied("T:1", "ev-1") == [second]


def test_saving_a_stale_version_is_a_conflict_and_writes_nothing(store: MemoryStore) -> None:
    new = record()
    store.create(new, [], entry(new))
    first, stale = store.load("T:1"), store.load("T:1")
    first.status = S.ACKNOWLEDGED
    store.save(first, [kci("T:1", 1)], entry(first))
    stale.status = S.REJECTED
    with pytest.raises(ConcurrencyConflict) as info:
        store.save(stale, [kci("T:1", 99)], entry(stale, "reject", "ev-stale"))
    assert info.value.order_id == "T:1"
    assert "changed since it was loaded (version 1, now 2)" in str(info.value)
    assert store.load("T:1").status == S.ACKNOWLEDGED
    assert [k.sequence_number for k in store.kcis("T:1")] == [1]
    assert store.applied("T:1", "ev-stale") is None
    assert len(store.events("T:1")) == 2


def test_saving_an_event_id_applied_meanwhile_is_a_conflict(store: MemoryStore) -> None:
    new = record()
    store.create(new, [], entry(new))
    loaded = store.load("T:1")
    store.save(loaded, [kci("T:1", 1)], entry(loaded, "warn", "ev-1"))
    again = store.load("T:1")
    with pytest.raises(ConcurrencyConflict, match="event id 'ev-1' was applied meanwhile"):
        store.save(again, [kci("T:1", 2)], entry(again, "warn", "ev-1"))
    assert len(store.kcis("T:1")) == 1


def test_saving_an_unknown_order_is_order_not_found(store: MemoryStore) -> None:
    stray = record("T:404")
    with pytest.raises(OrderNotFound):
        store.save(stray, [], entry(stray))


def test_applied_knows_only_the_event_ids_it_stored(store: MemoryStore) -> None:
    new = record()
    store.create(new, [], entry(new, "received", "create-1"))
    assert store.applied("T:1", "create-1") == []
    assert store.applied("T:1", "other") is None
    assert store.applied("T:404", "create-1") is None


def test_applied_and_kcis_return_copies_of_the_lists(store: MemoryStore) -> None:
    new = record()
    first = kci("T:1", 1)
    store.create(new, [first], entry(new, "create", "e", first))
    applied = store.applied("T:1", "e")
    assert applied is not None
    applied.clear()
    store.kcis("T:1").clear()
    store.events("T:1").clear()
    assert store.applied("T:1", "e") == [first]
    assert store.kcis("T:1") == [first]
    assert len(store.events("T:1")) == 1


@pytest.mark.parametrize("call", ["load", "kcis", "events"])
def test_reading_an_unknown_order_is_order_not_found(store: MemoryStore, call: str) -> None:
    with pytest.raises(OrderNotFound) as info:
        getattr(store, call)("T:404")
    assert info.value.order_id == "T:404"


def test_order_ids_lists_orders_in_creation_order(store: MemoryStore) -> None:
    assert list(store.order_ids()) == []
    for order_id in ("T:3", "T:1", "T:2"):
        new = record(order_id)
        store.create(new, [], entry(new))
    ids = store.order_ids()
    new = record("T:0")
    store.create(new, [], entry(new))
    assert list(ids) == ["T:3", "T:1", "T:2"]
    assert list(store.order_ids()) == ["T:3", "T:1", "T:2", "T:0"]


# --- Records -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("known", "given", "matches"),
    [
        (RequestRef(5), RequestRef(5), True),
        (RequestRef(5, "A"), RequestRef(6, "A"), False),
        (RequestRef(5, "A"), RequestRef(None, "A"), True),
        (RequestRef(None, "A"), RequestRef(5, "A"), True),
        (RequestRef(5), RequestRef(None, "A"), False),
        (RequestRef(None, "A"), RequestRef(None, "B"), False),
    ],
)
def test_a_request_is_matched_by_id_or_else_by_reference(
    known: RequestRef, given: RequestRef, matches: bool
) -> None:
    assert known.matches(given) is matches


@pytest.mark.parametrize(
    ("ref", "label"),
    [
        (RequestRef(5), "id 5"),
        (RequestRef(None, "A-1"), "reference 'A-1'"),
        (RequestRef(5, "A-1"), "id 5 / reference 'A-1'"),
    ],
)
def test_a_request_label_names_what_identifies_it(ref: RequestRef, label: str) -> None:
    assert ref.label() == label


def test_a_request_reference_round_trips_through_json() -> None:
    ref = RequestRef(5, "A-1")
    assert ref.to_json() == {"id": 5, "reference": "A-1"}
    assert RequestRef.from_json(ref.to_json()) == ref
    assert RequestRef.from_json({}) == RequestRef()


def test_an_order_record_copy_has_its_own_lists_and_requests() -> None:
    original = record(status=S.PENDING_AMENDMENT)
    original.return_stack.append(S.IN_PROGRESS)
    original.amendments.append(RequestRef(1))
    original.cancellation = RequestRef(None, "C")
    copy = original.copy()
    assert copy == original
    copy.return_stack.clear()
    copy.amendments[0].id = 2
    assert copy.cancellation is not None
    copy.cancellation.reference = "D"
    assert original.return_stack == [S.IN_PROGRESS]
    assert original.amendments == [RequestRef(1)]
    assert original.cancellation == RequestRef(None, "C")


def test_a_kci_renders_its_body_as_compact_json() -> None:
    assert kci("T:1", 3).json() == '{"sequenceNumber":3}'


def test_the_log_keeps_no_one_or_several_kci_ids_per_event(store: MemoryStore) -> None:
    new = record()
    store.create(new, [], entry(new, "received"))
    loaded = store.load("T:1")
    one = kci("T:1", 1)
    store.save(loaded, [one], entry(loaded, "warn", "ev-1", one))
    loaded = store.load("T:1")
    two = [kci("T:1", 2), kci("T:1", 3)]
    store.save(loaded, two, entry(loaded, "update", "ev-2", *two))
    assert [e.kci_ids for e in store.events("T:1")] == [(), ("k-T:1-1",), ("k-T:1-2", "k-T:1-3")]
    assert store.applied("T:1", "ev-1") == [one]
    assert store.applied("T:1", "ev-2") == two
    assert store.kcis("T:1") == [one, *two]


def test_keeping_events_leaves_the_collector_nothing_new_to_track() -> None:
    """An applied event's KCI and log entry are kept as plain values in the order's lists: the
    collector's count of new containers hardly moves (a tuple per KCI, per entry and per entry's
    KCI ids made it grow by three an event, and set off a collection every 230 events)."""
    engine = Engine()
    ids = [engine.accept_order(P, provide_order(n)) for n in range(1, 102)]
    warm, ids = ids[0], ids[1:]
    acknowledge = {"order": {"supplierOrderReference": "S-1"}}
    steps: list[tuple[Event, dict[str, Any]]] = []
    for visit in range(3):
        steps.append((Event.WARN, {"problem_code": "NETWORK_ISSUE", "text": "Storm"}))
        steps.append((Event.UPDATE, {"order": {"notes": f"Engineer visit {visit}"}}))
    for order_id in ids:
        engine.apply(order_id, Event.ACKNOWLEDGE, acknowledge)
    engine.apply(warm, Event.ACKNOWLEDGE, acknowledge)
    for event, data in steps:  # the contract's plans for these KCIs are compiled now
        engine.apply(warm, event, data)
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for order_id in ids:
            for event, data in steps:
                engine.apply(order_id, event, data)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < len(ids) * len(steps) / 2  # was three an event
    assert engine.kcis(ids[0])[-1].reason_code is ReasonCode.UPDATE


def test_a_kept_kci_costs_about_the_length_of_its_text() -> None:
    """What the store keeps of a KCI is about its JSON's length (orjson's bytes, kept as they
    came, held a 4 KB buffer each: 695 MB instead of 396 for 100,000 orders)."""
    engine = Engine()
    ids = [engine.accept_order(P, provide_order(n)) for n in range(1, 101)]
    acknowledge = {"order": {"supplierOrderReference": "S-1"}}
    for order_id in ids:
        engine.apply(order_id, Event.ACKNOWLEDGE, acknowledge)
    warning = {"problem_code": "NETWORK_ISSUE", "text": "Storm"}
    engine.apply(ids[0], Event.WARN, warning)  # the plan of a WARNING compiled now
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [len(engine.apply(order_id, Event.WARN, warning)[0].json()) for order_id in ids[1:]]
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 3 * sum(kept)  # 4 KB and more a KCI with the buffers
