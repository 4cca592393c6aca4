"""The engine: accept orders, apply supplier events, get back the KCIs they produced.

Every call is one unit of work against the store: the order's new state and the KCIs it produced
are written together, or, if anything refuses the event, nothing is written at all.
"""

from __future__ import annotations

import copy
import gc
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from time import time_ns
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from .core._documents import ENGINE_OWNED, validate_order
from .core._lifecycle import Firing
from .core.codes import OrderStatus, OrderType, ReasonCode
from .core.contract import REASONS
from .core.events import (
    NO_DATA,
    RECEIVED,
    Event,
    EventData,
    EventEntry,
    parse_event,
    parse_event_data,
)
from .core.records import Kci, OrderRecord
from .core.spec import OrderTypeSpec
from .core.wire import NAME_MAX, Name, format_datetime
from .errors import (
    ConcurrencyConflict,
    ConfigurationError,
    EngineError,
    InvalidEventData,
    InvalidOrder,
    OrderExists,
    StoreBusy,
    shown,
)
from .orders import SPECS
from .store.base import Prefetching, Store
from .store.memory import MemoryStore

OrderInput = Mapping[str, Any] | BaseModel
#: How far ahead of the engine's clock an event's ``issued_on`` may be, by default.
DEFAULT_ISSUED_ON_SKEW = timedelta(minutes=5)


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class _Entropy(threading.local):
    """Random bytes from ``os.urandom``, drawn a few kilobytes at a time, each thread its own
    (a system call per KCI costs as much as the rest of its id)."""

    def __init__(self) -> None:
        self.pool = b""
        self.at = 0


_ENTROPY = _Entropy()
_POOL = 4000  # ten bytes an id


def _new_pool() -> None:
    _ENTROPY.pool, _ENTROPY.at = b"", 0


os.register_at_fork(after_in_child=_new_pool)  # a child never reuses its parent's bytes


def new_kci_id() -> str:
    """The default KCI id: a version 7 UUID (RFC 9562): the Unix time in milliseconds, then 74
    random bits from ``os.urandom``.

    Time-ordered, so each new KCI's id lands at the end of the outbox's primary-key index
    instead of on a random page of it: a batch of a thousand events dirties a few index pages,
    not hundreds (decisions S20). Formatted without building a ``UUID`` object, which costs
    three times as much and is paid on every KCI.
    """
    entropy = _ENTROPY
    at = entropy.at
    if at == len(entropy.pool):
        entropy.pool, at = os.urandom(_POOL), 0
    entropy.at = at + 10
    raw = bytearray((time_ns() // 1_000_000).to_bytes(6) + entropy.pool[at : at + 10])
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the block runs (unless it was off already).

    A batch keeps every record it saved and every KCI it made until it ends, thousands of
    containers that survive the young generations and so bring on full collections, each
    walking every object of the process, while the engine's own garbage has no cycles to find
    (decisions S21; Mercurial's ``util.nogc`` does this for the same reason). Other threads'
    cycles wait for the batch's end."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Engine:
    """Runs order lifecycles and produces their KCIs.

    Args:
        store: where orders and KCIs are kept (default: a new :class:`MemoryStore`).
        clock: returns the current time, timezone-aware (default: UTC now).
        new_id: returns a fresh KCI id (default: a time-ordered UUID, :func:`new_kci_id`).
        conflict_retries: when another writer changes an order between this engine's read and
            its commit, re-read and re-apply the event up to this many times before raising
            :class:`ConcurrencyConflict` (default 0: raise at once). A :class:`StoreBusy` (the
            database stayed locked past its busy timeout) is not retried: it already waited.
        max_issued_on_skew: how far ahead of ``clock`` an event's ``issued_on`` may be
            (default 5 minutes). A KCI's issuedOn never goes backwards, so one far-future
            issuedOn would stamp every later KCI of the order with it.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = new_kci_id,
        conflict_retries: int = 0,
        max_issued_on_skew: timedelta = DEFAULT_ISSUED_ON_SKEW,
    ) -> None:
        if isinstance(conflict_retries, bool) or not isinstance(conflict_retries, int):
            raise ConfigurationError(
                f"conflict_retries must be an integer, not {shown(conflict_retries)}"
            )
        if conflict_retries < 0:
            raise ConfigurationError(f"conflict_retries must be >= 0, not {conflict_retries}")
        if not isinstance(max_issued_on_skew, timedelta) or max_issued_on_skew < timedelta(0):
            raise ConfigurationError(
                f"max_issued_on_skew must be a timedelta >= 0, not {shown(max_issued_on_skew)}"
            )
        self._skew = max_issued_on_skew
        self.store: Store = store if store is not None else MemoryStore()
        self._clock = clock
        self._new_id = new_id
        self._retries = conflict_retries

    def using(self, store: Store) -> Engine:
        """The same engine (clock, ids, conflict policy) on another store, e.g. a SQL store
        joined to the caller's own transaction (:meth:`SqlStore.joined`)."""
        return Engine(
            store,
            clock=self._clock,
            new_id=self._new_id,
            conflict_retries=self._retries,
            max_issued_on_skew=self._skew,
        )

    def accept_order(
        self,
        order_type: OrderType | str,
        order: OrderInput,
        *,
        order_id: str | None = None,
        conversation_id: str | None = None,
        answered_with: OrderStatus | str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Take on a tenant-placed order the gateway sent (``POST /service-orders``).

        The order starts in SENT_TO_SUPPLIER. If the supplier answered the create request with
        201 and status ACKNOWLEDGED or IN_PROGRESS, pass that status as ``answered_with``: the
        engine records it but sends no ACKNOWLEDGED or COMMITTED KCI (the gateway does), and the
        first KCI the supplier does send is still sequence number 1.

        Args:
            order_type: provide, cease or modify.
            order: the order in wire form (camelCase) or as a pydantic order model.
            order_id: the engine's key for it (default ``TENANT:id``).
            conversation_id: the create request's X-Conversation-ID, echoed on every KCI.
            answered_with: the status of a synchronous 201 answer, if there was one.
            event_id: makes the call idempotent like :meth:`apply`.

        Returns:
            The order id to apply events to.

        Raises:
            InvalidOrder: the order is malformed, or of a type the gateway does not place.
            OrderExists: an order with that id was already accepted.
            RefusedEvent: the synchronous answer breaks the contract (e.g. no dates).
        """
        spec = _spec(order_type)
        if not spec.placed_by_tenant:
            raise InvalidOrder(
                f"a {spec.order_type} order is created by the supplier, with "
                "create_unsolicited_cease(), not accepted from the gateway"
            )
        _refuse_engine_owned(order, allow_status=True)
        initial = spec.chart.initial
        document = validate_order(spec, _with_status(order, OrderStatus(initial)))
        key = _identify(spec, document, order_id, conversation_id, event_id)
        record = OrderRecord(
            key, spec.order_type, initial, document, conversation_id=conversation_id
        )
        if event_id is not None and self._replayed(key, event_id, RECEIVED) is not None:
            return key
        now = self._clock()
        if answered_with is not None:
            sync = (
                spec.synchronous_answers.get(answered_with)
                if isinstance(answered_with, str)
                else None
            )
            if sync is None:
                statuses = " or ".join(sorted(spec.synchronous_answers))
                raise InvalidEventData(
                    f"order {key}: answered_with: a synchronous 201 answer carries {statuses}, "
                    f"not {_plain(answered_with)}",
                    order_id=key,
                    status=record.status,
                )
            self._fire(record, sync, NO_DATA, now)
        data = EventData(event_id=event_id)
        entry = EventEntry(key, RECEIVED, event_id, "", record.status, (), data, now, spec.version)
        try:
            self.store.create(record, [], entry)
        except OrderExists:
            # Another caller created it between our look and our write: with the same event
            # id that was this very request, retried or raced, so it answers the same.
            if event_id is None or self._replayed(key, event_id, RECEIVED) is None:
                raise
        return key

    def create_unsolicited_cease(
        self,
        order: OrderInput,
        *,
        order_id: str | None = None,
        conversation_id: str | None = None,
        event_id: str | None = None,
    ) -> list[Kci]:
        """Create an unsolicited cease and its CREATED KCI.

        The order's ``status`` says whether it is created ACKNOWLEDGED or IN_PROGRESS (then with
        committedDate and targetDate). Its id defaults to its ``supplierOrderReference``.

        Returns:
            The KCIs produced (the CREATED KCI).

        Raises:
            InvalidOrder: the order is malformed.
            OrderExists: an order with that id already exists.
            RefusedEvent: the CREATED KCI would break the contract.
        """
        spec = SPECS[OrderType.UNSOLICITED_CEASE]
        _refuse_engine_owned(order, allow_status=True)
        document = validate_order(spec, order)
        created = REASONS[ReasonCode.CREATED].statuses
        if document["status"] not in created:
            raise InvalidOrder(
                f"an unsolicited cease is created {' or '.join(sorted(created))}, "
                f"not {document['status']}"
            )
        key = _identify(spec, document, order_id, conversation_id, event_id)
        if event_id is not None:
            prior = self._replayed(key, event_id, Event.CREATE.value)
            if prior is not None:
                return prior
        record = OrderRecord(
            key, spec.order_type, spec.chart.initial, document, conversation_id=conversation_id
        )
        now = self._clock()
        kcis = self._fire(record, Event.CREATE, NO_DATA, now)
        data = EventData(event_id=event_id)
        entry = EventEntry(
            key,
            Event.CREATE.value,
            event_id,
            "",
            record.status,
            _ids(kcis),
            data,
            now,
            spec.version,
        )
        try:
            self.store.create(record, kcis, entry)
        except OrderExists:
            prior = None if event_id is None else self._replayed(key, event_id, entry.event)
            if prior is None:
                raise
            return prior  # the same request, retried or raced: the first one's KCIs
        return kcis

    def apply(
        self,
        order_id: str,
        event: Event | str,
        data: EventData | Mapping[str, Any] | None = None,
    ) -> list[Kci]:
        """Apply a supplier event to an order.

        Args:
            order_id: the order.
            event: the supplier action (an :class:`Event` or its name).
            data: what goes with it (:class:`EventData` or a mapping of its fields).

        Returns:
            The KCIs the event produced (none for events the gateway already knows of, such as
            a received amendment). With ``data.event_id`` seen before: the KCIs of that first
            application, and nothing changes.

        Raises:
            OrderNotFound: no such order.
            EventNotAllowed: the event is not allowed in the order's status.
            ContractViolation: the KCI would break the contract (:class:`MissingField` names the
                missing field).
            InvalidEventData: the data is malformed.
            ConcurrencyConflict: another writer changed the order meanwhile.
        """
        check_identifier("order id", order_id)
        try:
            kind = parse_event(event)
            parsed = parse_event_data(data)
        except InvalidEventData as exc:
            status = self.store.load(order_id).status
            raise InvalidEventData(
                f"order {order_id}: event {_quoted(event)} in status {status} refused: "
                f"{exc.message}",
                order_id=order_id,
                status=status,
                event=_plain(event),
            ) from None
        attempt = 0
        while True:
            if parsed.event_id is not None:
                prior = self._replayed(order_id, parsed.event_id, kind._value_)
                if prior is not None:
                    return prior
            record = self.store.load(order_id)
            before = record.status
            now = self._clock()
            if parsed.issued_on is not None:
                self._check_issued_on(record, kind, parsed, now)
            kcis = self._fire(record, kind, parsed, now)
            entry = EventEntry(
                order_id,
                kind._value_,
                parsed.event_id,
                before,
                record.status,
                _ids(kcis),
                parsed,
                now,
            )
            try:
                self.store.save(record, kcis, entry)
            except StoreBusy:
                raise  # the store already waited its busy timeout for the lock
            except ConcurrencyConflict:
                attempt += 1
                if attempt > self._retries:
                    raise
                continue
            return kcis

    def apply_batch(
        self,
        items: Iterable[tuple[str, Event | str, EventData | Mapping[str, Any] | None]],
    ) -> list[list[Kci]]:
        """Apply many events in one transaction (bulk import, replay): all or none. Python's
        cyclic garbage collector is paused while it runs (decisions S21).

        Args:
            items: ``(order_id, event, data)`` triples, applied in order.

        Returns:
            The KCIs of each item, in the order of ``items``.

        Raises:
            EngineError: the first refusal or failure, with a note naming the item's position;
                nothing of the batch is kept.
        """
        results: list[list[Kci]] = []
        store = self.store
        prefetch = store.prefetch if isinstance(store, Prefetching) else None
        pending = iter(items)
        with _collector_paused(), store.batch():
            # A few hundred items at a time: their orders read ahead in one statement.
            while chunk := list(islice(pending, _BATCH_CHUNK)):
                if prefetch is not None:
                    prefetch([item[0] for item in chunk])
                for order_id, event, data in chunk:
                    try:
                        results.append(self.apply(order_id, event, data))
                    except EngineError as exc:
                        exc.add_note(f"batch item {len(results)}; nothing of the batch was kept")
                        raise
        return results

    def order(self, order_id: str) -> OrderRecord:
        """A copy of the order's current record (status, latest document, sequence counter),
        its document deep-copied: changing it changes nothing stored."""
        record = self.store.load(check_identifier("order id", order_id))
        record.document = copy.deepcopy(record.document)
        return record

    def kcis(self, order_id: str) -> list[Kci]:
        """Every KCI of the order, in sequence order."""
        return self.store.kcis(check_identifier("order id", order_id))

    def allowed_events(self, order_id: str) -> list[Event]:
        """The events the order's current status allows, sorted by name (some of them only
        for some histories: a delay that began before commitment ends with an UPDATE)."""
        record = self.store.load(check_identifier("order id", order_id))
        return sorted(SPECS[record.order_type].allowed(record.status))

    def is_final(self, order_id: str) -> bool:
        """Whether the order is in a final status (no event leaves it)."""
        record = self.store.load(check_identifier("order id", order_id))
        state = SPECS[record.order_type].chart.state(record.status)
        return state is not None and state.final

    def events(self, order_id: str) -> list[EventEntry]:
        """The order's event log: every event applied to it, oldest first."""
        return self.store.events(check_identifier("order id", order_id))

    def _replayed(self, order_id: str, event_id: str, event: str) -> list[Kci] | None:
        """The KCIs of an event already applied with ``event_id``, or ``None``.

        Raises:
            InvalidEventData: the id was used for a different event (a caller's bug: answering
                with the first event's KCIs would silently drop this one).
        """
        prior = self.store.applied(order_id, event_id)
        if prior is None:
            return None
        used = next((e.event for e in self.store.events(order_id) if e.event_id == event_id), event)
        if used != event:
            raise InvalidEventData(
                f"order {order_id}: event id {event_id!r} was already used for event '{used}', "
                f"not '{event}'; give each event its own id",
                order_id=order_id,
                event=event,
            )
        return prior

    def _check_issued_on(
        self, record: OrderRecord, event: Event, data: EventData, now: datetime
    ) -> None:
        """Refuse an ``issued_on`` too far ahead of ``now``.

        Raises:
            InvalidEventData: it is more than the allowed skew ahead.
        """
        if data.issued_on is None or data.issued_on - now <= self._skew:
            return
        raise InvalidEventData(
            f"order {record.order_id}: event '{event}' in status {record.status} refused: "
            f"issued_on {format_datetime(data.issued_on)} is more than {self._skew} ahead of the "
            f"engine's clock ({format_datetime(now)}); issuedOn never goes backwards, so every "
            "later KCI of the order would carry it",
            order_id=record.order_id,
            status=record.status,
            event=event.value,
        )

    def _fire(self, record: OrderRecord, event: Event, data: EventData, now: datetime) -> list[Kci]:
        spec = SPECS[record.order_type]
        firing = Firing(spec, record, event, data, now, self._new_id)
        spec.machine.fire(firing)
        return firing.kcis


#: Items of :meth:`Engine.apply_batch` whose orders are read ahead together.
_BATCH_CHUNK = 500


def _ids(kcis: list[Kci]) -> tuple[str, ...]:
    return tuple([kci.kci_id for kci in kcis])  # a list is built faster than a generator runs


def _spec(value: OrderType | str) -> OrderTypeSpec:
    try:
        if not isinstance(value, str):
            raise ValueError(value)  # Enum lookup would repr (and deeply recurse into) the value
        return SPECS[OrderType(value)]
    except ValueError:
        known = ", ".join(t.value for t in OrderType)
        raise InvalidOrder(f"unknown order type {shown(value)}; known types: {known}") from None


def _with_status(order: OrderInput, status: OrderStatus) -> dict[str, Any]:
    if isinstance(order, BaseModel):
        data = order.model_dump(by_alias=True, exclude_none=True)
    elif isinstance(order, Mapping):
        data = dict(order)
    else:
        raise InvalidOrder(f"an order is a mapping or a pydantic model, not {type(order).__name__}")
    data["status"] = status.value
    return data


def _quoted(value: object) -> str:
    """An event name quoted as in every refusal (``'warn'``, also for :class:`Event` members);
    anything else bounded."""
    return f"'{value}'" if isinstance(value, str) else shown(value)


def _plain(value: object) -> str:
    """A string as it is; anything else bounded (see :func:`engine.errors.shown`)."""
    return str(value) if isinstance(value, str) else shown(value)


def check_identifier(kind: str, value: object) -> str:
    """An order id, conversation id or event id the stores can keep: 1 to 200 characters of
    valid Unicode text on one line (no control characters, no lone surrogates).

    Raises:
        InvalidOrder: naming ``kind`` and what is wrong.
    """
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= NAME_MAX
        or not (value.isprintable() or _valid_line(value))
    ):
        raise InvalidOrder(
            f"{kind} {shown(value)}: must be a string of 1 to {NAME_MAX} characters on one line "
            "(no control characters, valid Unicode)"
        )
    return value


def _identify(
    spec: OrderTypeSpec,
    document: Mapping[str, Any],
    order_id: object,
    conversation_id: object,
    event_id: object,
) -> str:
    """The key of a new order (given, or the type's default), its ids checked first."""
    if conversation_id is not None:
        check_identifier("conversation id", conversation_id)
    if event_id is not None:
        check_identifier("event id", event_id)
    if order_id is None:
        return check_identifier("order id", _default_key(spec, document))
    return check_identifier("order id", order_id)


def _valid_line(value: str) -> bool:
    """Whether a string that is not printable (``str.isprintable``, checked first at C speed:
    surrogates and control characters are not) is still a valid one-line name."""
    try:
        _NAME.validate_python(value)
    except ValidationError:
        return False
    return True


_NAME: TypeAdapter[str] = TypeAdapter(Name)


def _refuse_engine_owned(order: OrderInput, *, allow_status: bool) -> None:
    """Refuse request references on an incoming order: only the engine sets them."""
    if isinstance(order, BaseModel):
        given = set(order.model_dump(by_alias=True, exclude_none=True))
    elif isinstance(order, Mapping):
        given = {k for k, v in order.items() if v is not None}
    else:
        return  # _with_status / validate_order report the wrong type
    owned = sorted(given & (ENGINE_OWNED - ({"status"} if allow_status else set())))
    if owned:
        raise InvalidOrder(
            f"{', '.join(owned)}: set by the engine on the KCI that answers a request, "
            "not given with the order"
        )


def _default_key(spec: OrderTypeSpec, document: Mapping[str, Any]) -> str:
    key = spec.default_key(document)
    if key is None:
        raise InvalidOrder(
            "give order_id, or an order with tenant and id, or a supplierOrderReference"
        )
    return key
