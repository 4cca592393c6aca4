"""The outbox as a delivery queue: which KCIs are due, who delivers an order, what happened.

Delivery bookkeeping (leases, delivered and retry marks) is committed without waiting for the
disk on SQLite: a power cut may forget that a KCI was delivered, which only means it is sent
again with the same id and body (the at-least-once promise). The KCIs themselves are written
with full durability by the engine.

An order's KCIs go out strictly in sequence: only the *head* (its lowest-numbered undelivered
KCI) is ever sent, and only by the dispatcher holding the order's lease. A dead head (rejected by
the gateway, or out of retries) blocks that order alone until an operator re-queues it. Rows are
never deleted; delivery progress is tracked in place.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .sql import SqlStore, Statement, now_ms
from .tables import LEASES, ORDERS, OUTBOX, DeliveryState

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
    return given or str(uuid.uuid5(_NAMESPACE, order_id))


_heads = (
    sa.select(OUTBOX.c.order_id, sa.func.min(OUTBOX.c.sequence_number).label("sequence_number"))
    .where(OUTBOX.c.delivery_state != DeliveryState.DELIVERED)
    .group_by(OUTBOX.c.order_id)
    .subquery("heads")
)
_DUE = (
    sa.select(OUTBOX.c.order_id)
    .join(
        _heads,
        sa.and_(
            OUTBOX.c.order_id == _heads.c.order_id,
            OUTBOX.c.sequence_number == _heads.c.sequence_number,
        ),
    )
    .outerjoin(LEASES, LEASES.c.order_id == OUTBOX.c.order_id)
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
    .where(OUTBOX.c.next_attempt_at_ms <= _B("k_now"))
    .where(
        sa.or_(
            LEASES.c.owner.is_(None),
            LEASES.c.until_ms < _B("k_now"),
            LEASES.c.owner == _B("k_me"),
        )
    )
    .order_by(OUTBOX.c.next_attempt_at_ms, OUTBOX.c.order_id)
    .limit(_B("k_limit", type_=sa.Integer))
)
_ACTIVE_HEADS = (
    sa.select(sa.func.count())
    .select_from(OUTBOX)
    .join(
        _heads,
        sa.and_(
            OUTBOX.c.order_id == _heads.c.order_id,
            OUTBOX.c.sequence_number == _heads.c.sequence_number,
        ),
    )
    .where(OUTBOX.c.delivery_state == DeliveryState.PENDING)
)
_HEAD = (
    sa.select(
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
    .join(ORDERS, ORDERS.c.order_id == OUTBOX.c.order_id)
    .where(OUTBOX.c.order_id == _B("k_order_id"))
    .where(OUTBOX.c.delivery_state != DeliveryState.DELIVERED)
    .order_by(OUTBOX.c.sequence_number)
    .limit(1)
)
_LEASE_ROW = {
    "sqlite": sqlite.insert(LEASES)
    .values(order_id=_B("k_order_id"), owner=None, until_ms=0)
    .on_conflict_do_nothing(),
    "postgresql": postgresql.insert(LEASES)
    .values(order_id=_B("k_order_id"), owner=None, until_ms=0)
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
    .values(owner=_B("k_me"), until_ms=_B("k_until"))
)
_RELEASE = (
    LEASES.update()
    .where(LEASES.c.order_id == _B("k_order_id"))
    .where(LEASES.c.owner == _B("k_me"))
    .values(owner=None, until_ms=0)
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
_NOTE = OUTBOX.update().where(OUTBOX.c.kci_id == _B("k_kci_id")).values(last_error=_B("k_error"))


class Outbox:
    """Delivery operations on a :class:`SqlStore`'s outbox."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def _run(self, statement: Statement, values: dict[str, Any]) -> int:
        with self.store.writing(durable=False) as runner:
            return runner.run(statement, values)

    def due_orders(self, me: str, limit: int) -> list[str]:
        """Orders whose head KCI is due now and not leased to another dispatcher."""
        with self.store.reading() as runner:
            rows = runner.rows(_DUE, {"k_now": now_ms(), "k_me": me, "k_limit": limit})
        return [row["order_id"] for row in rows]

    def deliverable(self) -> int:
        """Orders whose head KCI is pending (due now or later); orders parked behind a dead
        letter do not count."""
        with self.store.reading() as runner:
            rows = runner.rows(_ACTIVE_HEADS, {})
        return int(next(iter(rows[0].values())))

    def claim(self, order_id: str, me: str, lease_s: float) -> bool:
        """Take (or renew) the order's delivery lease; ``False`` if another dispatcher has it."""
        now = now_ms()
        with self.store.writing(durable=False) as runner:
            runner.run(_LEASE_ROW[self.store.dialect], {"k_order_id": order_id})
            values = {"k_order_id": order_id, "k_now": now, "k_me": me}
            values["k_until"] = now + int(lease_s * 1000)
            return runner.run(_CLAIM, values) == 1

    def release(self, order_id: str, me: str) -> None:
        self._run(_RELEASE, {"k_order_id": order_id, "k_me": me})

    def head(self, order_id: str) -> Head | None:
        """The order's lowest-numbered undelivered KCI, pending or dead."""
        with self.store.reading() as runner:
            rows = runner.rows(_HEAD, {"k_order_id": order_id})
        if not rows:
            return None
        row = rows[0]
        row["conversation_id"] = conversation_id(order_id, row["conversation_id"])
        return Head(**row)

    def delivered(self, kci_id: str, order_id: str, me: str, lease_s: float) -> None:
        """Mark the KCI delivered and renew the order's lease, in one transaction."""
        now = now_ms()
        with self.store.writing(durable=False) as runner:
            runner.run(_DELIVERED, {"k_kci_id": kci_id, "k_now": now})
            runner.run(
                _CLAIM,
                {
                    "k_order_id": order_id,
                    "k_now": now,
                    "k_me": me,
                    "k_until": now + int(lease_s * 1000),
                },
            )

    def retry_later(self, kci_id: str, next_attempt_ms: int, error: str | None) -> None:
        self._run(_RETRY, {"k_kci_id": kci_id, "k_next": next_attempt_ms, "k_error": error})

    def dead(self, kci_id: str, error: str | None) -> None:
        self._run(_DEAD, {"k_kci_id": kci_id, "k_error": error})

    def note(self, kci_id: str, error: str) -> None:
        """Record an error on a KCI without counting an attempt (e.g. credentials refused)."""
        self._run(_NOTE, {"k_kci_id": kci_id, "k_error": error})

    # --- operators -----------------------------------------------------------------------------

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
        return self._run(
            OUTBOX.update()
            .where(OUTBOX.c.order_id == _B("k_order_id"))
            .where(OUTBOX.c.delivery_state == DeliveryState.DEAD)
            .values(delivery_state=DeliveryState.PENDING, next_attempt_at_ms=_B("k_now")),
            {"k_order_id": order_id, "k_now": now_ms()},
        )


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
