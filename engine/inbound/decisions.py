"""The supplier's business logic as the Supplier API sees it: a request comes in, a decision
goes out.

The app validates the request, finds the order and works out from its lifecycle which answers
its status allows; the logic only decides among them. Each decision has one meaning on the wire
and one in the engine:

============================  ==========================  =======================================
decision                      answer                      in the engine
============================  ==========================  =======================================
:class:`Reject`               422 with the reasons        nothing (the answer is kept for retries)
:class:`Later`                202                         recorded; the KCI it owes is tracked
:class:`Acknowledge` (create) 201 ACKNOWLEDGED            ``acknowledged_in_201``: no KCI
:class:`Commit` (create)      201 IN_PROGRESS + dates     ``committed_in_201``: no KCI
:class:`Apply` (amend/cancel) 201 with your reference     ``amended_in_201`` / ``cancelled_in_201``
============================  ==========================  =======================================

A decision must not have side effects the app cannot undo: when two copies of one request race,
both may be decided and only the first one's answer is given (to both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..core.codes import OrderType
from ..core.records import OrderRecord


class Reject:
    """422: the request is invalid or not possible; the reasons go to the tenant as the error's
    ``messages`` (the gateway prefixes them), so write them for a person:
    ``Reject("UPRN 100000001 is not within our coverage area")``."""

    __slots__ = ("reasons",)

    def __init__(self, *reasons: str) -> None:
        self.reasons: tuple[str, ...] = tuple(reasons) or ("The supplier rejected the request",)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reject) and other.reasons == self.reasons

    def __hash__(self) -> int:
        return hash(self.reasons)

    def __repr__(self) -> str:
        return f"Reject{self.reasons!r}"


@dataclass(frozen=True, slots=True)
class Later:
    """202: accepted, answered later by a KCI (which the engine then owes)."""


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """201 ACKNOWLEDGED: the order is acknowledged now, with the supplier's reference."""

    supplier_order_reference: str


@dataclass(frozen=True, slots=True)
class Commit:
    """201 IN_PROGRESS: acknowledged and committed now, with the dates."""

    supplier_order_reference: str
    committed_date: datetime | str
    target_date: datetime | str


@dataclass(frozen=True, slots=True)
class Apply:
    """201 to an amendment or cancellation: applied now; ``supplier_reference`` is the
    supplier's reference for the request (the answer's ``supplierReference``)."""

    supplier_reference: str


OrderDecision = Reject | Later | Acknowledge | Commit
RequestDecision = Reject | Later | Apply


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A create request (``POST /service-orders``), validated.

    Attributes:
        tenant: the tenant that placed it.
        order_type: provide, cease or modify (from ``orderType``).
        gateway_id: the order's gateway ``id``.
        order: the order as the gateway sent it (wire names).
        request_id, conversation_id: the request's X-Request-ID and X-Conversation-ID.
    """

    tenant: str
    order_type: OrderType
    gateway_id: int
    order: Mapping[str, Any]
    request_id: str
    conversation_id: str


@dataclass(frozen=True, slots=True)
class AmendmentRequest:
    """An amendment (``POST /service-order-amendments``), validated against the order.

    Attributes:
        tenant: the tenant (the ``Tenant`` header).
        gateway_id: the amendment's gateway ``id``.
        order: the order as the engine has it now (status, document, requests in flight).
        changes: the order fields the amendment replaces (wire names; ``None`` removes one).
        body: the request as the gateway sent it.
        can_apply_now: whether the order's status allows a 201 (:class:`Apply`); it does not
            in PENDING (decisions L22).
    """

    tenant: str
    gateway_id: int
    order: OrderRecord
    changes: Mapping[str, Any]
    body: Mapping[str, Any]
    request_id: str
    conversation_id: str
    can_apply_now: bool = True


@dataclass(frozen=True, slots=True)
class CancellationRequest:
    """A cancellation (``POST /service-order-cancellations``), validated against the order.

    Attributes:
        reason_code: the request's ``reasonCode`` (checked against the order type's reasons).
        can_apply_now: whether the order's status allows a 201 (:class:`Apply`).
    """

    tenant: str
    gateway_id: int
    order: OrderRecord
    reason_code: str
    body: Mapping[str, Any]
    request_id: str
    conversation_id: str
    can_apply_now: bool = True


class SupplierLogic(Protocol):
    """What the supplier decides. Called in a worker thread, one request at a time per thread;
    raising answers 500 (``SUPPLIER_FAULT``) and writes nothing."""

    def decide_order(self, request: OrderRequest) -> OrderDecision: ...

    def decide_amendment(self, request: AmendmentRequest) -> RequestDecision: ...

    def decide_cancellation(self, request: CancellationRequest) -> RequestDecision: ...


class AnswerLater:
    """Logic that answers every request 202: the supplier's systems work each one out and send
    the owed KCI through the engine. What ``kci-engine serve`` runs by default."""

    def decide_order(self, request: OrderRequest) -> OrderDecision:
        return Later()

    def decide_amendment(self, request: AmendmentRequest) -> RequestDecision:
        return Later()

    def decide_cancellation(self, request: CancellationRequest) -> RequestDecision:
        return Later()
