"""The outbox as a delivery queue: which KCIs are due, who delivers an order, what happened.

Delivery bookkeeping (leases, delivered and retry marks) is committed without waiting for the
disk on SQLite: a power cut may forget that a KCI was delivered, which only means it is sent
again with the same id and body (the at-least-once promise). The KCIs themselves are written
with full durability by the engine.

An order's KCIs go out strictly in sequence: only the *head* (its lowest-numbered undelivered
KCI) is ever sent, and only by the dispatcher holding the order's lease. A dead head (rejected by
the gateway, or out of retries) blocks that order alone until an operator re-queues it. Rows are
never deleted; delivery progress is tracked in place.

The head test costs the same however long the queue: a pending KCI is its order's head when the
KCI numbered one before it is delivered (or there is none), one index lookup; the due query
walks ``ix_kci_outbox_due`` in time order and stops after ``limit`` heads. A head that must wait
(retry later, dead) pushes the KCIs behind it to its own time, so they are not walked past again
and again while it waits.

Each order's lease carries a fencing token, bumped by every claim: renewals, releases and
delivered marks count only for the token the holder claimed with, so a dispatcher paused past its
lease (and taken over) learns it at its next renewal and stops sending for that order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..core._documents import apply_changes
from ..core.contract import check_order
from ..core.events import REPAIRED, EventData
from ..core.spec import OrderTypeSpec
from ..core.wire import dump_json
from ..errors import DeliveryError, EngineError
from .sql import SqlStore, Statement, now_ms
from .tables import EVENTS, LEASES, ORDERS, OUTBOX, REPAIRS, DeliveryState

_B = sa.bindparam
_NAMESPACE = uuid.UUID("6b636900-0000-4000-8000-6b6369656e67")  # fixed: conversation ids


@dataclass(frozen=True, slots=True)
class Head:
    """The next KCI of an order to deliver."""

    kci_id: str
    order_id: str
    sequence_number: int
    body: str
    delivery_state: str
    attempts: int
    next_attempt_at_ms: int
    created_at_ms: int
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Mark:
    """One piece of delivery bookkeeping, committed with others in :meth:`Outbox.commit`.

    ``delivered``: the KCI is delivered; with ``renew`` the lease is renewed too; with
    ``want_next`` the order's next KCIs are read back. ``retry``: try again at
    ``next_attempt_ms`` (its followers wait too). ``dead``: dead-letter it (its followers are
    parked). ``note``: record ``error`` only.
    ``renew``: extend the lease. ``release`` (or ``release=True`` on another mark): give the
    lease up. Every lease change counts only while ``token`` is still the order's token.
    """

    kind: Literal["delivered", "retry", "dead", "note", "renew", "release"]
    order_id: str
    token: int
    kci_id: str = ""
    sequence_number: int = 0
    next_attempt_ms: int = 0
    error: str | None = None
    want_next: int = 0
    release: bool = False
    renew: bool = True


@dataclass(frozen=True, slots=True)
class Marked:
    """What committing a mark found: whether the lease is still held, and the KCIs read back."""

    held: bool
    following: list[Head] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Repaired:
    """A dead KCI corrected and queued again."""

    order_id: str
    kci_id: str
    sequence_number: int
    body: str
    #: with an order correction: the undelivered KCIs behind it corrected too
    behind: int = 0


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7386)."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A KCI the gateway refused or that ran out of retries, and how many KCIs wait behind it."""

    order_id: str
    kci_id: str
    sequence_number: int
    reason_code: str
    attempts: int
    last_error: str | None
    waiting: int


def conversation_id(order_id: str, given: str | None) -> str:
    """The order's X-Conversation-ID: the one from its create request, else a stable UUID."""
    return given or _derived_conversation_id(order_id)


@lru_cache(maxsize=16_384)
def _derived_conversation_id(order_id: str) -> str:
    # A SHA-1 and a UUID per KCI read was a tenth of the dispatcher's database thread.
    return str(uuid.uuid5(_NAMESPACE, order_id))


#: ``next_attempt_at_ms`` of KCIs parked behind a dead letter (woken when it is re-queued).
PARKED_MS = 2**62

_prev = OUTBOX.alias("prev")
#: A pending KCI is its order's head when the KCI one before it is delivered (or absent).
_IS_HEAD = ~(
    sa.exists()
    .where(_prev.c.order_id == OUTBOX.c.order_id)
    .where(_prev.c.sequence_number == OUTBOX.c.sequence_number - 1)
    .where(_prev.c.delivery_state != DeliveryState.DELIVERED)
)
_HEAD_COLUMNS = (
    OUTBOX.c.kci_id,
    OUTBOX.c.order_id,
    OUTBOX.c.sequence_number,
    OUTBOX.c.body,
    OUTBOX.c.delivery_state,
    OUTBOX.c.attempts,
    OUTBOX.c.next_attempt_at_ms,
    OUTBOX.c.created_at_ms,
    ORDERS.c.conversation_id,
)
_DUE_HEADS = (
    sa.select(*_HEAD_COLUMNS)
    .select_from(
        OUTBOX.join(ORDERS, ORDERS.c.order_id == OUTBOX.c.order_id).outerjoin(
            LEASES, LEASES.c.order_id == OUTBOX.c.order_id
        )
    )
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
    .where(OUTBOX.c.next_attempt_at_ms <= _B("k_now"))
    .where(_IS_HEAD)
    .where(sa.or_(LEASES.c.owner.is_(None), LEASES.c.until_ms < _B("k_now")))
    .order_by(OUTBOX.c.next_attempt_at_ms)
    .limit(_B("k_limit", type_=sa.Integer))
)
_ACTIVE_HEADS = (
    sa.select(sa.func.count())
    .select_from(OUTBOX)
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
    .where(_IS_HEAD)
)
_FOLLOWING = (
    sa.select(*_HEAD_COLUMNS)
    .join(ORDERS, ORDERS.c.order_id == OUTBOX.c.order_id)
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.delivery_state != DeliveryState.DELIVERED)
    .where(OUTBOX.c.sequence_number > _B("k_after"))
    .order_by(OUTBOX.c.sequence_number)
    .limit(_B("k_limit", type_=sa.Integer))
)
_LEASE_ROW = {
    "sqlite": sqlite.insert(LEASES)
    .values(order_id=_B("k_order_id"), owner=None, until_ms=0, token=0)
    .on_conflict_do_nothing(),
    "postgresql": postgresql.insert(LEASES)
    .values(order_id=_B("k_order_id"), owner=None, until_ms=0, token=0)
    .on_conflict_do_nothing(),
}
_CLAIM = (
    LEASES.update()
    .where(LEASES.c.order_id == _B("k_order_id"))
    .where(
        sa.or_(
            LEASES.c.owner.is_(None),
            LEASES.c.until_ms < _B("k_now"),
            LEASES.c.owner == _B("k_me"),
        )
    )
    .values(owner=_B("k_me"), until_ms=_B("k_until"), token=LEASES.c.token + 1)
)
_TOKEN = (
    sa.select(LEASES.c.token)
    .where(LEASES.c.order_id == _B("k_order_id"))
    .where(LEASES.c.owner == _B("k_me"))
)
_HELD = (
    LEASES.c.order_id == _B("k_order_id"),
    LEASES.c.owner == _B("k_me"),
    LEASES.c.token == _B("k_token"),
)
_RENEW = LEASES.update().where(*_HELD).values(until_ms=_B("k_until"))
_GIVE_UP = LEASES.update().where(*_HELD).values(owner=None, until_ms=0)
_RELEASE = (
    LEASES.update()
    .where(LEASES.c.order_id == _B("k_order_id"))
    .where(LEASES.c.owner == _B("k_me"))
    .values(owner=None, until_ms=0)
)
_RELEASE_ALL_MINE = (
    LEASES.update().where(LEASES.c.owner == _B("k_me")).values(owner=None, until_ms=0)
)
_DELIVERED = (
    OUTBOX.update()
    .where(OUTBOX.c.kci_id == _B("k_kci_id"))
    .where(OUTBOX.c.delivery_state != DeliveryState.DELIVERED)
    .values(
        delivery_state=DeliveryState.DELIVERED,
        attempts=OUTBOX.c.attempts + 1,
        delivered_at_ms=_B("k_now"),
        last_error=None,
    )
)
_RETRY = (
    OUTBOX.update()
    .where(OUTBOX.c.kci_id == _B("k_kci_id"))
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
    .values(
        attempts=OUTBOX.c.attempts + 1,
        next_attempt_at_ms=_B("k_next"),
        last_error=_B("k_error"),
    )
)
_DEAD = (
    OUTBOX.update()
    .where(OUTBOX.c.kci_id == _B("k_kci_id"))
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
    .values(
        delivery_state=DeliveryState.DEAD,
        attempts=OUTBOX.c.attempts + 1,
        last_error=_B("k_error"),
    )
)
#: The KCIs behind a head that waits, made to wait as long (or parked, behind a dead letter).
_PUSH_FOLLOWERS = (
    OUTBOX.update()
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
    .where(OUTBOX.c.sequence_number > _B("k_seq"))
    .where(OUTBOX.c.next_attempt_at_ms < _B("k_next"))
    .values(next_attempt_at_ms=_B("k_next"))
)
_WAKE = (
    OUTBOX.update()
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.delivery_state != DeliveryState.DELIVERED)
    .values(delivery_state=DeliveryState.PENDING, next_attempt_at_ms=_B("k_now"))
)
_DEAD_COUNT = (
    sa.select(sa.func.count())
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.delivery_state == DeliveryState.DEAD)
)
_FIRST_DEAD = (
    sa.select(OUTBOX.c.kci_id, OUTBOX.c.sequence_number, OUTBOX.c.body, OUTBOX.c.last_error)
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.delivery_state == DeliveryState.DEAD)
    .order_by(OUTBOX.c.sequence_number)
    .limit(1)
)
_REPAIRED = (
    OUTBOX.update()
    .where(OUTBOX.c.kci_id == _B("k_kci_id"))
    .where(OUTBOX.c.delivery_state == DeliveryState.DEAD)
    .values(
        body=_B("k_body"),
        delivery_state=DeliveryState.PENDING,
        next_attempt_at_ms=_B("k_now"),
        last_error=None,
    )
)
_UNPARK = (
    OUTBOX.update()
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
    .where(OUTBOX.c.next_attempt_at_ms > _B("k_now"))
    .values(next_attempt_at_ms=_B("k_now"))
)
_UNDELIVERED_AFTER = (
    sa.select(OUTBOX.c.kci_id, OUTBOX.c.sequence_number, OUTBOX.c.body)
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.sequence_number > _B("k_seq"))
    .where(OUTBOX.c.delivery_state != DeliveryState.DELIVERED)
    .order_by(OUTBOX.c.sequence_number)
)
_ORDER_NOW = sa.select(
    ORDERS.c.order_type, ORDERS.c.status, ORDERS.c.document, ORDERS.c.version
).where(ORDERS.c.order_id == _B("k_order_id"))
_CORRECT_ORDER = (
    ORDERS.update()
    .where(ORDERS.c.order_id == _B("k_order_id"))
    .where(ORDERS.c.version == _B("k_version"))
    .values(document=_B("k_document"), version=ORDERS.c.version + 1, updated_at_ms=_B("k_now"))
)
_CORRECT_BODY = (
    OUTBOX.update()
    .where(OUTBOX.c.kci_id == _B("k_kci_id"))
    .where(OUTBOX.c.delivery_state != DeliveryState.DELIVERED)
    .values(body=_B("k_body"))
)
_LOG = EVENTS.insert().values({c.name: _B(c.name) for c in EVENTS.c if c.name != "seq"})
_AUDIT = REPAIRS.insert().values({c.name: _B(c.name) for c in REPAIRS.c if c.name != "seq"})
_NOTE = OUTBOX.update().where(OUTBOX.c.kci_id == _B("k_kci_id")).values(last_error=_B("k_error"))


def _log_row(
    order_id: str,
    status: str,
    order: Mapping[str, Any] | None,
    characteristics: Mapping[str, str | None] | None,
    now: int,
) -> dict[str, Any]:
    data = EventData(
        order=None if order is None else dict(order),
        service_characteristics=None if characteristics is None else dict(characteristics),
    )
    given = {"order"} if order is not None else set()
    given |= {"service_characteristics"} if characteristics is not None else set()
    return {
        "order_id": order_id,
        "event_id": None,
        "event": REPAIRED,
        "status_before": status,
        "status_after": status,
        "kci_ids": "[]",
        "data": data.model_dump_json(include=given),
        "applied_at_ms": now,
    }


def _head(row: dict[str, Any]) -> Head:
    row["conversation_id"] = conversation_id(row["order_id"], row["conversation_id"])
    return Head(**row)


def _following(runner: Any, order_id: str, after: int, limit: int) -> list[Head]:
    values = {"k_order_id": order_id, "k_after": after, "k_limit": limit}
    return [_head(row) for row in runner.rows(_FOLLOWING, values)]


class Outbox:
    """Delivery operations on a :class:`SqlStore`'s outbox."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def _run(self, statement: Statement, values: dict[str, Any]) -> int:
        with self.store.writing(durable=False) as runner:
            return runner.run(statement, values)

    def due_heads(self, limit: int) -> list[Head]:
        """Up to ``limit`` heads due now whose order no dispatcher holds (one query; it costs
        the same at 500 and at 100,000 pending KCIs)."""
        with self.store.reading() as runner:
            rows = runner.rows(_DUE_HEADS, {"k_now": now_ms(), "k_limit": limit})
        return [_head(row) for row in rows]

    def deliverable(self) -> int:
        """Orders whose head KCI is pending (due now or later); orders parked behind a dead
        letter do not count."""
        with self.store.reading() as runner:
            rows = runner.rows(_ACTIVE_HEADS, {})
        return int(next(iter(rows[0].values())))

    def claim_many(self, order_ids: Sequence[str], me: str, lease_s: float) -> dict[str, int]:
        """Take (or take back) the leases of ``order_ids`` in one transaction; the orders won,
        each with its new fencing token."""
        now = now_ms()
        until = now + int(lease_s * 1000)
        won: dict[str, int] = {}
        with self.store.writing(durable=False) as runner:
            for order_id in order_ids:
                runner.run(_LEASE_ROW[self.store.dialect], {"k_order_id": order_id})
                values = {"k_order_id": order_id, "k_now": now, "k_me": me, "k_until": until}
                if runner.run(_CLAIM, values) == 1:
                    rows = runner.rows(_TOKEN, {"k_order_id": order_id, "k_me": me})
                    won[order_id] = int(rows[0]["token"])
        return won

    def claim(self, order_id: str, me: str, lease_s: float) -> bool:
        """Take (or renew) the order's delivery lease; ``False`` if another dispatcher has it."""
        return order_id in self.claim_many([order_id], me, lease_s)

    def release(self, order_id: str, me: str) -> None:
        """Give up ``me``'s lease of the order, whatever its token."""
        self._run(_RELEASE, {"k_order_id": order_id, "k_me": me})

    def release_all(self, me: str) -> int:
        """Give up every lease ``me`` holds: a dispatcher that starts again under a stable worker
        id takes its orders back at once instead of waiting for its old leases to run out."""
        return self._run(_RELEASE_ALL_MINE, {"k_me": me})

    def following(self, order_id: str, after: int, limit: int) -> list[Head]:
        """The order's undelivered KCIs numbered above ``after``, in sequence."""
        with self.store.reading() as runner:
            return _following(runner, order_id, after, limit)

    def commit(self, me: str, lease_s: float, marks: Sequence[Mark]) -> list[Marked]:
        """Commit ``marks`` in one transaction (delivery bookkeeping: not waited onto the disk
        on SQLite); for each, whether ``me`` still holds the order's lease and (``want_next``)
        the order's next KCIs.

        Raises:
            StoreBusy: the write lock stayed taken; nothing was committed, try again.
            StoreError: the database failed.
        """
        now = now_ms()
        until = now + int(lease_s * 1000)
        found: list[Marked] = []
        with self.store.writing(durable=False) as runner:
            for mark in marks:
                held = {"k_order_id": mark.order_id, "k_me": me, "k_token": mark.token}
                kci = {"k_kci_id": mark.kci_id}
                if mark.kind == "delivered":
                    runner.run(_DELIVERED, {**kci, "k_now": now})
                elif mark.kind == "retry":
                    runner.run(
                        _RETRY, {**kci, "k_next": mark.next_attempt_ms, "k_error": mark.error}
                    )
                    self._push(runner, mark, mark.next_attempt_ms)
                elif mark.kind == "dead":
                    runner.run(_DEAD, {**kci, "k_error": mark.error})
                    self._push(runner, mark, PARKED_MS)
                elif mark.kind == "note":
                    runner.run(_NOTE, {**kci, "k_error": mark.error})
                if mark.kind == "release" or mark.release:
                    runner.run(_GIVE_UP, held)
                    found.append(Marked(held=False))
                    continue
                still = not mark.renew or runner.run(_RENEW, {**held, "k_until": until}) == 1
                following: list[Head] = []
                if still and mark.want_next:
                    following = _following(
                        runner, mark.order_id, mark.sequence_number, mark.want_next
                    )
                found.append(Marked(held=still, following=following))
        return found

    @staticmethod
    def _push(runner: Any, mark: Mark, until_ms: int) -> None:
        values = {"k_order_id": mark.order_id, "k_seq": mark.sequence_number, "k_next": until_ms}
        runner.run(_PUSH_FOLLOWERS, values)

    # --- operators -----------------------------------------------------------------------------

    def repair(
        self,
        order_id: str,
        patch: Mapping[str, Any] | None = None,
        *,
        validate: Callable[[dict[str, Any]], object],
        order: Mapping[str, Any] | None = None,
        characteristics: Mapping[str, str | None] | None = None,
        spec: OrderTypeSpec | None = None,
        by: str | None = None,
    ) -> Repaired:
        """Correct the order's first dead KCI and queue it again, ahead of the KCIs behind it.

        The gateway's docs say a KCI it refused (400/422) must not be sent again unchanged: fix
        it and send it with the same sequence number. Two corrections, alone or together:

        - ``order`` / ``characteristics``: the order's data the gateway objected to, in the
          engine's own convention for order changes (each named top-level field replaced whole,
          ``None`` removes it; characteristics by name) and validated by the same rules as an
          event's changes. The order is corrected, and so is the order each undelivered KCI
          carries (the dead one and those behind it, which would be refused for the same
          reason); the correction goes to the event log as a ``repaired`` entry (no status
          change, no KCI), so ``history replay`` replays it. Needs the order type's ``spec``.
        - ``patch``: a JSON merge patch (RFC 7386) of the refused body itself
          (``{"problemCode": "WAYLEAVE_ISSUE"}``; ``null`` removes a field).

        Each corrected body must pass ``validate`` (the contract's one-body rules:
        :func:`kci_engine.orders.parse_kci`) and keeps its ``id`` and ``sequenceNumber`` (the
        refused body was never accepted, so the id is free; decisions S16). Each body's former
        text (and, for the dead one, the gateway's answer) goes to the audit history
        (``kci_repair``). One transaction: all of it, or (on an error) nothing.

        Raises:
            OrderNotFound: no such order.
            DeliveryError: the order has no dead KCI; nothing is to be corrected or the
                correction changes nothing; it changes the id or sequence number; a corrected
                body or the order breaks the contract; the order changed meanwhile.
        """
        correcting = order is not None or characteristics is not None
        if patch is None and not correcting:
            raise DeliveryError(
                f"order {order_id}: say what to correct (a patch of the body, or the order)",
                order_id=order_id,
            )
        if correcting and spec is None:
            raise DeliveryError(
                f"order {order_id}: correcting the order needs its type's spec", order_id=order_id
            )
        with self.store.connection() as conn:
            SqlStore._require(conn, order_id)
        with self.store.reading() as runner:
            found = runner.rows(_FIRST_DEAD, {"k_order_id": order_id})
            if not found:
                raise DeliveryError(
                    f"order {order_id} has no dead KCI to repair", order_id=order_id
                )
            dead = found[0]
            behind = runner.rows(
                _UNDELIVERED_AFTER, {"k_order_id": order_id, "k_seq": dead["sequence_number"]}
            )
            [current] = runner.rows(_ORDER_NOW, {"k_order_id": order_id})
        refused = json.loads(dead["body"])
        corrected = dict(refused)
        document: dict[str, Any] | None = None
        later: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if correcting:
            assert spec is not None
            document, fix = self._correct_order(order_id, current, spec, order, characteristics)
            corrected = fix(corrected)
            later = [(row, fix(json.loads(row["body"]))) for row in behind]
        if patch is not None:
            corrected = merge_patch(corrected, patch)
        if not isinstance(corrected, dict) or corrected == refused:
            raise DeliveryError(
                f"order {order_id}: the correction leaves KCI #{dead['sequence_number']} as the "
                "gateway refused it (unchanged); the gateway must not be sent it unchanged",
                order_id=order_id,
            )
        for field_name in ("id", "sequenceNumber"):
            if corrected.get(field_name) != refused.get(field_name):
                raise DeliveryError(
                    f"order {order_id}: a repair keeps the KCI's {field_name} "
                    f"({refused.get(field_name)!r})",
                    order_id=order_id,
                )
        for number, body in [(dead["sequence_number"], corrected)] + [
            (row["sequence_number"], body) for row, body in later
        ]:
            try:
                validate(body)
            except ValueError as exc:
                first = " ".join(str(exc).split())[:500]
                raise DeliveryError(
                    f"order {order_id}: the corrected KCI #{number} breaks the contract: {first}",
                    order_id=order_id,
                ) from None
        body_text = dump_json(corrected)
        now = now_ms()
        with self.store.writing() as runner:
            changed = runner.run(
                _REPAIRED, {"k_kci_id": dead["kci_id"], "k_body": body_text, "k_now": now}
            )
            if changed != 1:
                raise DeliveryError(
                    f"order {order_id}: KCI {dead['kci_id']} changed meanwhile; look again",
                    order_id=order_id,
                )
            audits = [(dead, dead["last_error"], body_text)]
            if document is not None:
                values = {
                    "k_order_id": order_id,
                    "k_version": current["version"],
                    "k_document": dump_json(document),
                    "k_now": now,
                }
                if runner.run(_CORRECT_ORDER, values) != 1:
                    raise DeliveryError(
                        f"order {order_id}: the order changed meanwhile; look again",
                        order_id=order_id,
                    )
                for row, body in later:
                    text = dump_json(body)
                    if runner.run(_CORRECT_BODY, {"k_kci_id": row["kci_id"], "k_body": text}) != 1:
                        raise DeliveryError(
                            f"order {order_id}: KCI {row['kci_id']} changed meanwhile; look again",
                            order_id=order_id,
                        )
                    audits.append((row, None, text))
                runner.run(_LOG, _log_row(order_id, current["status"], order, characteristics, now))
            for row, answer, text in audits:
                runner.run(
                    _AUDIT,
                    {
                        "order_id": order_id,
                        "kci_id": row["kci_id"],
                        "sequence_number": row["sequence_number"],
                        "refused_body": row["body"],
                        "gateway_answer": answer,
                        "corrected_body": text,
                        "repaired_by": by,
                        "repaired_at_ms": now,
                    },
                )
            runner.run(_UNPARK, {"k_order_id": order_id, "k_now": now})
        return Repaired(order_id, dead["kci_id"], dead["sequence_number"], body_text, len(later))

    @staticmethod
    def _correct_order(
        order_id: str,
        current: Mapping[str, Any],
        spec: OrderTypeSpec,
        order: Mapping[str, Any] | None,
        characteristics: Mapping[str, str | None] | None,
    ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], dict[str, Any]]]:
        """The corrected order document, and how to correct the order a KCI body carries."""
        if current["order_type"] != spec.order_type.value:
            raise DeliveryError(
                f"order {order_id} is a {current['order_type']} order, not {spec.order_type}",
                order_id=order_id,
            )
        before = json.loads(current["document"])
        try:
            document = apply_changes(spec, before, order, characteristics)
            check_order(current["status"], document, spec)
        except EngineError as exc:
            raise DeliveryError(
                f"order {order_id}: the correction is refused: {exc.message}", order_id=order_id
            ) from None
        if document == before:
            raise DeliveryError(
                f"order {order_id}: the correction changes nothing in the order (unchanged)",
                order_id=order_id,
            )
        prop = spec.kci_property

        def fix(body: dict[str, Any]) -> dict[str, Any]:
            carried = body.get(prop)
            if not isinstance(carried, dict):
                return body
            try:
                return {**body, prop: apply_changes(spec, carried, order, characteristics)}
            except EngineError as exc:
                raise DeliveryError(
                    f"order {order_id}: KCI #{body.get('sequenceNumber')} cannot take the "
                    f"correction: {exc.message}",
                    order_id=order_id,
                ) from None

        return document, fix

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead KCI, with the number of KCIs of its order waiting behind it."""
        with self.store.connection() as conn:
            dead = conn.execute(
                sa.select(
                    OUTBOX.c.order_id,
                    OUTBOX.c.kci_id,
                    OUTBOX.c.sequence_number,
                    OUTBOX.c.reason_code,
                    OUTBOX.c.attempts,
                    OUTBOX.c.last_error,
                )
                .where(OUTBOX.c.delivery_state == DeliveryState.DEAD)
                .order_by(OUTBOX.c.order_id, OUTBOX.c.sequence_number)
            ).all()
            waiting: dict[str, int] = {
                order_id: int(count)
                for order_id, count in conn.execute(
                    sa.select(OUTBOX.c.order_id, sa.func.count())
                    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
                    .group_by(OUTBOX.c.order_id)
                ).tuples()
            }
        return [
            DeadLetter(**row._mapping, waiting=int(waiting.get(row.order_id, 0))) for row in dead
        ]

    def requeue(self, order_id: str) -> int:
        """Put the order's dead KCIs back in the queue, due now; returns how many.

        Raises:
            OrderNotFound: no such order.
        """
        with self.store.connection() as conn:
            SqlStore._require(conn, order_id)
        with self.store.writing(durable=False) as runner:
            values = {"k_order_id": order_id, "k_now": now_ms()}
            dead = runner.rows(_DEAD_COUNT, values)
            runner.run(_WAKE, values)  # the dead KCIs, and the ones parked behind them
        return int(next(iter(dead[0].values())))


def summary(letters: list[DeadLetter]) -> str:
    """Dead letters as JSON lines (for the CLI)."""
    return "\n".join(
        json.dumps(
            {
                "order_id": d.order_id,
                "kci_id": d.kci_id,
                "sequence_number": d.sequence_number,
                "reason_code": d.reason_code,
                "attempts": d.attempts,
                "waiting_behind": d.waiting,
                "last_error": d.last_error,
            },
            sort_keys=True,
        )
        for d in letters
    )
