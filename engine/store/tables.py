"""The engine's tables, as SQLModel classes on a registry of their own.

A separate registry keeps these tables out of ``SQLModel.metadata``, so a supplier whose own
service uses SQLModel does not create, drop or migrate them by accident (and vice versa). Every
table name starts with ``kci_``. The schema is created and upgraded by the Alembic migrations in
``engine/store/migrations``; :data:`METADATA` is their target.

Times the dispatcher compares (``next_attempt_at``) are integer milliseconds since the epoch,
which index and compare the same way on every backend; ``issued_on`` is the wire string, whose
fixed format sorts chronologically.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class KciTable(SQLModel, registry=registry()):
    """Base of the engine's tables."""


class OrderRow(KciTable, table=True):
    """One order: its state, latest document and KCI counter."""

    __tablename__ = "kci_order"

    order_id: str = Field(primary_key=True, max_length=200)
    order_type: str = Field(max_length=32)
    status: str = Field(max_length=32)
    return_stack: str = Field(sa_column=Column(Text, nullable=False))
    requests: str = Field(sa_column=Column(Text, nullable=False))
    document: str = Field(sa_column=Column(Text, nullable=False))
    next_sequence: int
    last_issued_on: str | None = Field(default=None, max_length=32)
    version: int
    conversation_id: str | None = Field(default=None, max_length=200)
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class OutboxRow(KciTable, table=True):
    """One KCI: append-only; delivery progress is tracked in place, rows are never deleted."""

    __tablename__ = "kci_outbox"
    __table_args__ = (
        UniqueConstraint("order_id", "sequence_number", name="uq_kci_outbox_order_sequence"),
        Index("ix_kci_outbox_due", "delivery_state", "next_attempt_at_ms"),
        Index("ix_kci_outbox_order_state", "order_id", "delivery_state", "sequence_number"),
    )

    kci_id: str = Field(primary_key=True, max_length=36)
    order_id: str = Field(foreign_key="kci_order.order_id", max_length=200)
    sequence_number: int
    reason_code: str = Field(max_length=32)
    status: str = Field(max_length=32)
    event: str = Field(max_length=64)
    issued_on: str = Field(max_length=32)
    body: str = Field(sa_column=Column(Text, nullable=False))
    delivery_state: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    delivered_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class EventRow(KciTable, table=True):
    """The event log: every event applied to an order, with its data and what it produced.

    ``event_id`` is the caller's id where one was given; it is unique per order, which makes
    applying the same event twice impossible even for two racing processes. ``seq`` only orders
    the log for reading; KCI sequence numbers never come from it.
    """

    __tablename__ = "kci_event"
    __table_args__ = (
        UniqueConstraint("order_id", "event_id", name="uq_kci_event_order_event_id"),
        Index("ix_kci_event_order", "order_id", "seq"),
    )

    seq: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    order_id: str = Field(foreign_key="kci_order.order_id", max_length=200)
    event_id: str | None = Field(default=None, max_length=200)
    event: str = Field(max_length=64)
    status_before: str = Field(max_length=32)
    status_after: str = Field(max_length=32)
    kci_ids: str = Field(sa_column=Column(Text, nullable=False))
    data: str = Field(sa_column=Column(Text, nullable=False))
    applied_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class DeliveryLeaseRow(KciTable, table=True):
    """Which dispatcher delivers an order's KCIs, until when. A lease that ran out may be taken
    over, so a dispatcher that died holds nothing for long; only the holder sends an order's
    KCIs, which keeps them in sequence across several dispatcher processes.

    ``token`` is the fencing token: every claim bumps it, and a holder's marks and renewals only
    count while the token is still the one it claimed with, so a dispatcher that was paused past
    its lease cannot act for an order someone else has taken over since."""

    __tablename__ = "kci_delivery_lease"

    order_id: str = Field(foreign_key="kci_order.order_id", primary_key=True, max_length=200)
    owner: str | None = Field(default=None, max_length=200)
    until_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    token: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class RepairRow(KciTable, table=True):
    """The audit history of dead letters an operator repaired: the body the gateway refused, its
    answer, and the corrected body sent in its place (same KCI id, same sequence number)."""

    __tablename__ = "kci_repair"
    __table_args__ = (Index("ix_kci_repair_order", "order_id", "seq"),)

    seq: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    order_id: str = Field(foreign_key="kci_order.order_id", max_length=200)
    kci_id: str = Field(max_length=36)
    sequence_number: int
    refused_body: str = Field(sa_column=Column(Text, nullable=False))
    gateway_answer: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    corrected_body: str = Field(sa_column=Column(Text, nullable=False))
    repaired_by: str | None = Field(default=None, max_length=200)
    repaired_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class OrderOriginRow(KciTable, table=True):
    """How an order began, written with it and never changed: the chart version it was created
    under and its document then. ``kci-engine history replay`` starts each order's replay from
    here (``kci_order`` keeps only the latest document)."""

    __tablename__ = "kci_order_origin"

    order_id: str = Field(foreign_key="kci_order.order_id", primary_key=True, max_length=200)
    chart_version: str = Field(max_length=64)
    document: str = Field(sa_column=Column(Text, nullable=False))


# --- The Supplier API's answers (engine/inbound) -------------------------------------------------


class InboundRequestRow(KciTable, table=True):
    """One request the gateway sent to the Supplier API and the answer it got: the key of its
    idempotency (a retry gets the same answer) and, for a 202, the KCI it owes and since when.

    ``kind`` is ``order``, ``amendment`` or ``cancellation``; ``gateway_id`` is the request's
    ``id`` (unique per tenant and kind). ``settled_at_ms`` is set once the owed KCI was written.
    """

    __tablename__ = "kci_inbound_request"
    __table_args__ = (Index("ix_kci_inbound_request_owed", "owes", "settled_at_ms"),)

    tenant: str = Field(primary_key=True, max_length=200)
    kind: str = Field(primary_key=True, max_length=16)
    gateway_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    fingerprint: str = Field(max_length=64)
    order_id: str | None = Field(default=None, max_length=200)
    status_code: int
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    owes: str | None = Field(default=None, max_length=64)
    answered_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    settled_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    request: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


INBOUND = InboundRequestRow.__table__  # type: ignore[attr-defined]


METADATA = KciTable.metadata
ORDERS = OrderRow.__table__  # type: ignore[attr-defined]
OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
EVENTS = EventRow.__table__  # type: ignore[attr-defined]
LEASES = DeliveryLeaseRow.__table__  # type: ignore[attr-defined]
REPAIRS = RepairRow.__table__  # type: ignore[attr-defined]
ORIGINS = OrderOriginRow.__table__  # type: ignore[attr-defined]


class DeliveryState:
    """Values of ``kci_outbox.delivery_state``."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    DEAD = "DEAD"
