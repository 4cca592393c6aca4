"""The plain records the engine works on: an order's state, and a KCI it produced.

They are deliberately plain (slotted dataclasses, wire-form dicts) so that a store can keep or
rebuild them cheaply and no per-order ``transitions`` or pydantic object stays alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from .codes import OrderStatus, OrderType, ReasonCode
from .wire import dump_json


@dataclass(slots=True)
class RequestRef:
    """A tenant's amendment or cancellation request: the gateway id and/or supplier reference."""

    id: int | None = None
    reference: str | None = None

    def matches(self, other: RequestRef) -> bool:
        """Whether ``other`` names this request (by id, or by reference when ids are absent)."""
        if self.id is not None and other.id is not None:
            return self.id == other.id
        return self.reference is not None and self.reference == other.reference

    def label(self) -> str:
        return " / ".join(
            part
            for part in (
                f"id {self.id}" if self.id is not None else "",
                f"reference {self.reference!r}" if self.reference is not None else "",
            )
            if part
        )

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "reference": self.reference}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRef:
        return cls(id=data.get("id"), reference=data.get("reference"))


@dataclass(slots=True)
class OrderRecord:
    """Everything the engine knows about one order.

    Attributes:
        order_id: the engine's key for the order (``TENANT:id`` by default).
        order_type: which lifecycle it follows.
        status: the state-machine state (an :class:`OrderStatus` value, or ``NEW`` before an
            unsolicited cease is created).
        document: the latest full order in wire form.
        return_stack: statuses to return to, innermost last (HELD, PENDING, PENDING_AMENDMENT
            and PENDING_CANCELLATION push the status they were entered from).
        amendments: amendment requests received and not yet answered.
        cancellation: the cancellation request received and not yet answered.
        next_sequence: the sequence number the next KCI gets (starts at 1, no gaps).
        last_issued_on: issuedOn of the latest KCI; the next one is never earlier.
        version: bumped by every committed change (optimistic concurrency).
        conversation_id: the X-Conversation-ID of the order's journey on the gateway.
    """

    order_id: str
    order_type: OrderType
    status: str
    document: dict[str, Any]
    return_stack: list[str] = field(default_factory=list)
    amendments: list[RequestRef] = field(default_factory=list)
    cancellation: RequestRef | None = None
    next_sequence: int = 1
    last_issued_on: datetime | None = None
    version: int = 0
    conversation_id: str | None = None

    def copy(self) -> OrderRecord:
        """A working copy: the engine fires events on it and throws it away on failure."""
        return OrderRecord(
            self.order_id,
            self.order_type,
            self.status,
            self.document,  # documents are replaced, never changed in place
            list(self.return_stack),
            [RequestRef(r.id, r.reference) for r in self.amendments] if self.amendments else [],
            None if self.cancellation is None else RequestRef(**self.cancellation.to_json()),
            self.next_sequence,
            self.last_issued_on,
            self.version,
            self.conversation_id,
        )


class Kci(NamedTuple):
    """One KCI the engine produced: the body to POST and what the outbox needs to know of it.

    Immutable (a named tuple: about five times cheaper to build than a frozen dataclass, and
    one is built per event). ``body`` shares the order document with the engine: treat it as
    read-only.
    """

    kci_id: str
    order_id: str
    sequence_number: int
    reason_code: ReasonCode
    status: OrderStatus
    issued_on: datetime
    body: dict[str, Any]
    event: str

    def json(self) -> str:
        """The body exactly as it is POSTed."""
        return dump_json(self.body)
