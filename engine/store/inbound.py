"""The Supplier API's ledger: every request the gateway sent, the answer it got, what a 202 owes.

The gateway retries; a retried create, amendment or cancellation (same tenant, kind and gateway
``id``) must get the same answer and change nothing. The ledger keeps each answer under that key,
written in the same transaction as what the answer did to the order, so the order and the
answer never disagree, and two racing copies of one request cannot both be answered: the second
one's insert of the key fails, its transaction rolls back, and it gives the first one's answer.

A 202 owes a KCI (ACKNOWLEDGED or ORDER_REJECTED; AMENDED or AMENDMENT_REJECTED; CANCELLED or
CANCELLATION_REJECTED). Whether it is still owed is read from the order itself, which the engine
keeps true by construction: an order answered 202 owes its first KCI until it has sent one (or
was cancelled by a 201), an amendment until it is no longer in flight, a cancellation likewise.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa

from ..core.codes import OrderStatus
from ..core.records import OrderRecord
from ..errors import ConfigurationError, OrderNotFound, RequestAnswered
from .base import Store
from .memory import MemoryStore
from .sql import SqlStore
from .tables import INBOUND

ORDER = "order"
AMENDMENT = "amendment"
CANCELLATION = "cancellation"
KINDS = (ORDER, AMENDMENT, CANCELLATION)
#: What a 202 answer to each kind of request owes: one of these KCIs.
OWES = {
    ORDER: "ACKNOWLEDGED or ORDER_REJECTED",
    AMENDMENT: "AMENDED or AMENDMENT_REJECTED",
    CANCELLATION: "CANCELLED or CANCELLATION_REJECTED",
}
_BEFORE_FIRST_KCI = frozenset({OrderStatus.SENT_TO_SUPPLIER, OrderStatus.PENDING_CANCELLATION})


@dataclass(frozen=True, slots=True)
class Answered:
    """One request and the answer it got.

    Attributes:
        tenant, kind, gateway_id: the request's key.
        fingerprint: a hash of the request body (a different body under the same key is refused).
        order_id: the engine's order the request concerned, if it reached one.
        status_code: the HTTP status of the answer.
        response: the answer's JSON body (``None``: no body).
        owes: the KCI a 202 owes (``None`` for any other answer).
        answered_at: when it was answered.
        settled_at: when the owed KCI was found written (``None``: still owed, or nothing owed).
        request: the request body as the gateway sent it (what a 202 leaves to do later).
    """

    tenant: str
    kind: str
    gateway_id: int
    fingerprint: str
    order_id: str | None
    status_code: int
    response: dict[str, Any] | None
    owes: str | None
    answered_at: datetime
    settled_at: datetime | None = None
    request: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Owed:
    """A KCI a 202 answer owes and has not been written yet."""

    tenant: str
    kind: str
    gateway_id: int
    order_id: str
    owes: str
    since: datetime

    def age_s(self, now: datetime) -> float:
        return round((now - self.since).total_seconds(), 3)

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "kind": self.kind,
            "id": self.gateway_id,
            "order_id": self.order_id,
            "owes": self.owes,
            "since": self.since.isoformat(timespec="milliseconds"),
            "age_s": self.age_s(now),
        }


@dataclass(slots=True)
class Slot:
    """The answer being recorded; replace ``answered`` (same key) before the transaction ends
    when the answer's body depends on what the engine did."""

    answered: Answered


def still_owed(answered: Answered, record: OrderRecord) -> bool:
    """Whether the KCI ``answered`` (a 202) owes is still unwritten, read from the order."""
    if answered.kind == ORDER:
        return record.next_sequence == 1 and record.status in _BEFORE_FIRST_KCI
    if answered.kind == AMENDMENT:
        return any(ref.id == answered.gateway_id for ref in record.amendments)
    pending = record.cancellation
    return pending is not None and pending.id == answered.gateway_id


class Ledger(Protocol):
    """Where the Supplier API keeps its answers (memory or the SQL store's database)."""

    def exclusive(self) -> Any:
        """A context in which this process handles one request at a time, where the store
        cannot order racing requests itself (memory); otherwise a no-op."""
        ...

    def find(self, tenant: str, kind: str, gateway_id: int) -> Answered | None:
        """The answer given to the request with this key, if any."""
        ...

    def recording(self, answered: Answered) -> Any:
        """A context that records ``answered`` (or what its :class:`Slot` holds at the end); run
        it inside the store's ``batch()`` with the engine's writes, so all land or none does.

        Raises:
            RequestAnswered: the key was answered already (a racing copy won).
        """
        ...

    def open_debts(self) -> list[Answered]:
        """Every 202 answer not yet marked settled, oldest first."""
        ...

    def settle(self, answered: Answered, at: datetime) -> None:
        """Mark a 202's owed KCI as written."""
        ...


def owed_kcis(ledger: Ledger, store: Store, *, mark: bool = False) -> list[Owed]:
    """The KCIs 202 answers owe and the orders have not yet produced, oldest first. With
    ``mark``, the debts found paid are marked settled, so later calls skip them."""
    found: list[Owed] = []
    now = datetime.now(UTC)
    for answered in ledger.open_debts():
        assert answered.order_id is not None
        assert answered.owes is not None
        try:
            record = store.load(answered.order_id)
        except OrderNotFound:
            continue
        if still_owed(answered, record):
            found.append(
                Owed(
                    answered.tenant,
                    answered.kind,
                    answered.gateway_id,
                    answered.order_id,
                    answered.owes,
                    answered.answered_at,
                )
            )
        elif mark:
            ledger.settle(answered, now)
    return found


def owed_status(store: Store, *, limit: int = 20) -> dict[str, Any]:
    """For ``kci-engine outbox status``: how many KCIs 202 answers owe, the oldest one's age, and
    the oldest ``limit`` of them (reads only)."""
    owed = owed_kcis(ledger_for(store), store)
    now = datetime.now(UTC)
    return {
        "count": len(owed),
        "oldest_age_s": owed[0].age_s(now) if owed else None,
        "oldest": [item.to_json(now) for item in owed[:limit]],
    }


def ledger_for(store: Store) -> Ledger:
    """The ledger that keeps its answers beside ``store``'s orders.

    Raises:
        ConfigurationError: a store of a kind the Supplier API cannot keep answers with.
    """
    if isinstance(store, SqlStore):
        return SqlLedger(store)
    if isinstance(store, MemoryStore):
        return MemoryLedger()
    raise ConfigurationError(
        f"the Supplier API keeps its answers with a SqlStore or a MemoryStore, "
        f"not a {type(store).__name__}"
    )


class MemoryLedger:
    """Answers in a dict, for the memory store; one request at a time (a lock)."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str, int], Answered] = {}
        self._lock = threading.RLock()

    def exclusive(self) -> Any:
        return self._lock

    def find(self, tenant: str, kind: str, gateway_id: int) -> Answered | None:
        return self._answers.get((tenant, kind, gateway_id))

    @contextmanager
    def recording(self, answered: Answered) -> Iterator[Slot]:
        key = (answered.tenant, answered.kind, answered.gateway_id)
        if key in self._answers:
            raise RequestAnswered(f"{answered.kind} {answered.gateway_id} was answered already")
        self._answers[key] = answered
        slot = Slot(answered)
        try:
            yield slot
        except BaseException:
            del self._answers[key]
            raise
        self._answers[key] = slot.answered

    def open_debts(self) -> list[Answered]:
        return sorted(
            (a for a in self._answers.values() if a.owes is not None and a.settled_at is None),
            key=lambda a: a.answered_at,
        )

    def settle(self, answered: Answered, at: datetime) -> None:
        key = (answered.tenant, answered.kind, answered.gateway_id)
        self._answers[key] = replace(answered, settled_at=at)


_B = sa.bindparam
_KEY = (
    (INBOUND.c.tenant == _B("k_tenant"))
    & (INBOUND.c.kind == _B("k_kind"))
    & (INBOUND.c.gateway_id == _B("k_gateway_id"))
)
_FIND = sa.select(INBOUND).where(_KEY)
_INSERT = INBOUND.insert().values({c.name: _B(c.name) for c in INBOUND.c})
_OPEN = (
    sa.select(INBOUND)
    .where(INBOUND.c.owes.is_not(None), INBOUND.c.settled_at_ms.is_(None))
    .order_by(INBOUND.c.answered_at_ms)
)
_RESPOND = INBOUND.update().where(_KEY).values(response=_B("v_response"))
_SETTLE = INBOUND.update().where(_KEY).values(settled_at_ms=_B("v_settled_at_ms"))


class SqlLedger:
    """Answers in the ``kci_inbound_request`` table of the store's database, written in the
    store's transaction (its ``batch()``)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def exclusive(self) -> Any:
        return nullcontext()

    def find(self, tenant: str, kind: str, gateway_id: int) -> Answered | None:
        with self.store.reading() as runner:
            rows = runner.rows(_FIND, _key(tenant, kind, gateway_id))
        return _answered(rows[0]) if rows else None

    @contextmanager
    def recording(self, answered: Answered) -> Iterator[Slot]:
        row = {
            "tenant": answered.tenant,
            "kind": answered.kind,
            "gateway_id": answered.gateway_id,
            "fingerprint": answered.fingerprint,
            "order_id": answered.order_id,
            "status_code": answered.status_code,
            "response": None if answered.response is None else json.dumps(answered.response),
            "owes": answered.owes,
            "answered_at_ms": _ms(answered.answered_at),
            "settled_at_ms": None,
            "request": None if answered.request is None else json.dumps(answered.request),
        }
        integrity: Any = self.store.db.dialect.dbapi
        with self.store.writing() as runner:
            try:
                runner.run(_INSERT, row)
            except (integrity.IntegrityError, sa.exc.IntegrityError):
                raise RequestAnswered(
                    f"{answered.kind} {answered.gateway_id} was answered already"
                ) from None
            slot = Slot(answered)
            yield slot
            if slot.answered.response != answered.response:
                values = _key(answered.tenant, answered.kind, answered.gateway_id)
                values["v_response"] = json.dumps(slot.answered.response)
                runner.run(_RESPOND, values)

    def open_debts(self) -> list[Answered]:
        with self.store.reading() as runner:
            return [_answered(row) for row in runner.rows(_OPEN, {})]

    def settle(self, answered: Answered, at: datetime) -> None:
        values = _key(answered.tenant, answered.kind, answered.gateway_id)
        values["v_settled_at_ms"] = _ms(at)
        with self.store.writing(durable=False) as runner:
            runner.run(_SETTLE, values)


def _key(tenant: str, kind: str, gateway_id: int) -> dict[str, Any]:
    return {"k_tenant": tenant, "k_kind": kind, "k_gateway_id": gateway_id}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _answered(row: Any) -> Answered:
    answered_at = _moment(row["answered_at_ms"])
    assert answered_at is not None
    return Answered(
        tenant=row["tenant"],
        kind=row["kind"],
        gateway_id=int(row["gateway_id"]),
        fingerprint=row["fingerprint"],
        order_id=row["order_id"],
        status_code=int(row["status_code"]),
        response=None if row["response"] is None else json.loads(row["response"]),
        owes=row["owes"],
        answered_at=answered_at,
        settled_at=_moment(row["settled_at_ms"]),
        request=None if row["request"] is None else json.loads(row["request"]),
    )
