"""The Supplier API's order management without HTTP: a request's headers and body in, an
answer (status and JSON body) out, the engine's state changed to match.

Every answer is derived from the order's lifecycle: the statuses that allow a 202 are those
whose chart allows ``amendment_received`` / ``cancellation_received``, those that allow a 201
are those that allow ``amended_in_201`` / ``cancelled_in_201``, and a request no step allows is
answered 422 before the supplier's logic is asked. What the answer does to the order is applied
by the engine in the same transaction as the answer is recorded in the ledger, and if the engine
refuses it there (the order moved meanwhile) the answer becomes that refusal, 422: the answer
and the order never disagree. The ledger makes each request idempotent (same tenant, kind and
gateway id: the same answer, nothing new), also when copies race.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from .._facade import Engine, check_identifier
from ..core._documents import apply_changes
from ..core.codes import OrderStatus, OrderType, ProvideOrderType
from ..core.events import Event
from ..core.records import Kci, OrderRecord
from ..core.spec import OrderTypeSpec
from ..core.wire import format_datetime
from ..errors import (
    ConcurrencyConflict,
    ConfigurationError,
    DecisionNotAllowed,
    EngineError,
    InvalidOrder,
    OrderExists,
    OrderNotFound,
    RefusedEvent,
    RequestAnswered,
    RequestRefused,
    StoreBusy,
)
from ..orders import SPECS
from ..store.inbound import (
    AMENDMENT,
    CANCELLATION,
    ORDER,
    OWES,
    Answered,
    Ledger,
    Owed,
    ledger_for,
    owed_kcis,
)
from .decisions import (
    Acknowledge,
    AmendmentRequest,
    Apply,
    CancellationRequest,
    Commit,
    Later,
    OrderRequest,
    Reject,
    SupplierLogic,
)

log = logging.getLogger("kci_engine.inbound")

#: The Supplier API's error codes by HTTP status (its ``code`` enum; a supplier never uses the
#: gateway's own GATEWAY_FAULT, SUPPLIER_TIMED_OUT or TENANT_FAULT).
ERROR_CODES = {
    400: "MALFORMED_REQUEST",
    401: "NOT_AUTHORISED",
    403: "NOT_AUTHORISED",
    404: "NOT_FOUND",
    405: "MALFORMED_REQUEST",
    413: "MALFORMED_REQUEST",
    422: "INVALID_REQUEST",
    500: "SUPPLIER_FAULT",
    501: "NOT_IMPLEMENTED",
    503: "SUPPLIER_FAULT",
}
#: Which order type a create request's ``orderType`` places.
ORDER_TYPES: Mapping[str, OrderType] = {
    **{value.value: OrderType.PROVIDE for value in ProvideOrderType},
    "CEASE": OrderType.CEASE,
    "MODIFY": OrderType.MODIFY,
}
TENANT_MAX = 50
#: How many times a request that lost a race for its order is answered again: each round one of
#: the racers wins, so this bounds how many requests on one order may arrive at once.
_CONFLICT_ATTEMPTS = 32
_REASON_MAX = 30
#: Fields of an amendment that name it or its order rather than change the order.
_NOT_CHANGES = frozenset({"id", "orderId", "supplierOrderReference", "tenant"})
_CONTACTS = frozenset({"primaryContact", "secondaryContact"})


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: the HTTP status and the JSON body (``None``: no body)."""

    status: int
    body: dict[str, Any] | None = None


def error_reply(status: int, *messages: str) -> Reply:
    """An error answer in the Supplier API's shape: ``{"uuid", "code", "messages"}``."""
    return Reply(
        status, {"uuid": str(uuid.uuid4()), "code": ERROR_CODES[status], "messages": list(messages)}
    )


@dataclass(frozen=True, slots=True)
class _Headers:
    request_id: str
    conversation_id: str
    tenant: str | None


@dataclass(frozen=True, slots=True)
class _Received:
    """A request as the ledger keys and keeps it."""

    kind: str
    tenant: str
    gateway_id: int
    fingerprint: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a request comes to before it is written: the answer, the order it concerns, what
    a 202 owes, and what to do in the engine (returns the 201 body, if it depends on it)."""

    reply: Reply
    order_id: str | None = None
    owes: str | None = None
    action: Callable[[], dict[str, Any] | None] | None = None


class SupplierApi:
    """The three order-management operations of the Supplier API, on an :class:`Engine`.

    Args:
        engine: the engine whose store keeps the orders (a :class:`SqlStore` to serve from
            several workers; a :class:`MemoryStore` for tests and the demo).
        logic: the supplier's decisions (:class:`SupplierLogic`).
        no_cancellation_in: statuses past the supplier's point of no return: a cancellation
            request in one of them is answered 422 (e.g. ``{"IN_PROGRESS"}``).
        ledger: where answers are kept (default: beside the engine's store).
    """

    def __init__(
        self,
        engine: Engine,
        logic: SupplierLogic,
        *,
        no_cancellation_in: Iterable[OrderStatus | str] = (),
        ledger: Ledger | None = None,
    ) -> None:
        self.engine = engine
        self.logic = logic
        self.ledger = ledger if ledger is not None else ledger_for(engine.store)
        known = {status.value for status in OrderStatus}
        self.no_cancellation_in = frozenset(str(status) for status in no_cancellation_in)
        if unknown := self.no_cancellation_in - known:
            raise ConfigurationError(f"no_cancellation_in: unknown statuses {sorted(unknown)}")

    # --- the operations ------------------------------------------------------------------------

    def create_order(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /service-orders``: provide, cease or modify."""
        try:
            sent = _headers(headers, tenant_required=False)
            data = _json(body)
            gateway_id = _gateway_id(data, "id")
            tenant = _tenant(data)
            if sent.tenant is not None and sent.tenant != tenant:
                raise RequestRefused(
                    422, f"Tenant header {sent.tenant!r} is not the order's tenant {tenant!r}"
                )
        except RequestRefused as exc:
            return error_reply(exc.http_status, *exc.messages)
        return self._answer(
            ORDER,
            tenant,
            gateway_id,
            data,
            lambda: self._plan_order(sent, tenant, gateway_id, data),
        )

    def amend_order(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /service-order-amendments``."""
        try:
            sent = _headers(headers, tenant_required=True)
            data = _json(body)
            gateway_id = _gateway_id(data, "id")
            order_gid = _gateway_id(data, "orderId")
        except RequestRefused as exc:
            return error_reply(exc.http_status, *exc.messages)
        assert sent.tenant is not None
        tenant = sent.tenant
        return self._answer(
            AMENDMENT,
            tenant,
            gateway_id,
            data,
            lambda: self._plan_amendment(sent, tenant, gateway_id, order_gid, data),
        )

    def cancel_order(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /service-order-cancellations`` (also the "cancel other" of an unsolicited
        cease)."""
        try:
            sent = _headers(headers, tenant_required=True)
            data = _json(body)
            gateway_id = _gateway_id(data, "id")
            order_gid = _gateway_id(data, "orderId")
            reason = _reason_code(data)
        except RequestRefused as exc:
            return error_reply(exc.http_status, *exc.messages)
        assert sent.tenant is not None
        tenant = sent.tenant
        return self._answer(
            CANCELLATION,
            tenant,
            gateway_id,
            data,
            lambda: self._plan_cancellation(sent, tenant, gateway_id, order_gid, reason, data),
        )

    def owed(self) -> list[Owed]:
        """The KCIs 202 answers owe and the engine has not written yet, oldest first (those
        found written are marked settled)."""
        return owed_kcis(self.ledger, self.engine.store, mark=True)

    def answered(self, tenant: str, kind: str, gateway_id: int) -> Answered | None:
        """The answer given to a request (``kind``: ``order``, ``amendment``, ``cancellation``)."""
        return self.ledger.find(tenant, kind, gateway_id)

    # --- idempotent answering ------------------------------------------------------------------

    def _answer(
        self,
        kind: str,
        tenant: str,
        gateway_id: int,
        data: Mapping[str, Any],
        plan: Callable[[], _Outcome],
    ) -> Reply:
        fingerprint = hashlib.sha256(
            json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        received = _Received(kind, tenant, gateway_id, fingerprint, dict(data))
        attempt = 0
        while True:
            try:
                with self.ledger.exclusive():
                    return self._answer_once(received, plan)
            except StoreBusy:
                raise  # the store already waited its busy timeout: 503
            except ConcurrencyConflict:
                # Another request changed the order between this one's read and its write (two
                # requests on one order at once, on PostgreSQL): nothing was written; answer it
                # again from the order as it is now.
                attempt += 1
                if attempt >= _CONFLICT_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))  # de-synchronise racers

    def _answer_once(self, received: _Received, plan: Callable[[], _Outcome]) -> Reply:
        prior = self.ledger.find(received.tenant, received.kind, received.gateway_id)
        if prior is not None:
            return _replay(prior, received.fingerprint)
        try:
            outcome = plan()
        except RequestRefused as exc:
            if exc.http_status != 422:
                return error_reply(exc.http_status, *exc.messages)
            outcome = _Outcome(error_reply(422, *exc.messages), order_id=exc.order_id)
        except DecisionNotAllowed as exc:
            log.error("supplier logic: %s", exc.message)
            return error_reply(500, exc.message)
        return self._write(received, outcome)

    def _write(self, received: _Received, outcome: _Outcome) -> Reply:
        answered = Answered(
            tenant=received.tenant,
            kind=received.kind,
            gateway_id=received.gateway_id,
            fingerprint=received.fingerprint,
            order_id=outcome.order_id,
            status_code=outcome.reply.status,
            response=outcome.reply.body,
            owes=outcome.owes,
            answered_at=datetime.now(UTC),
            request=received.body,
        )
        try:
            with self.engine.store.batch(), self.ledger.recording(answered) as slot:
                if outcome.action is not None:
                    body = outcome.action()
                    if body is not None:
                        slot.answered = answered = replace(answered, response=body)
        except DecisionNotAllowed as exc:
            log.error("supplier logic: %s", exc.message)
            return error_reply(500, exc.message)  # nothing written: a retry is decided afresh
        except RequestAnswered:
            prior = self.ledger.find(received.tenant, received.kind, received.gateway_id)
            assert prior is not None  # the copy that won committed it
            return _replay(prior, received.fingerprint)
        except (RefusedEvent, OrderExists, InvalidOrder, OrderNotFound) as exc:
            # The engine refused what the answer would do (the order moved since it was read):
            # the answer is that refusal, and nothing of the first answer was written.
            refused = error_reply(422, exc.message)
            return self._write(received, _Outcome(refused, outcome.order_id))
        log.debug(
            "supplier api: %s %s of tenant %s answered %s",
            received.kind,
            received.gateway_id,
            received.tenant,
            answered.status_code,
        )
        return Reply(answered.status_code, answered.response)

    def accept_amendment(
        self, tenant: str, amendment_id: int, data: Mapping[str, Any] | None = None
    ) -> list[Kci]:
        """Accept an amendment answered 202: apply the changes it asked for (against the order
        as it is now, by the same rules as a 201) and send its AMENDED KCI.

        Args:
            tenant: the tenant that sent it.
            amendment_id: its gateway id.
            data: more event data for the KCI (``text``, ``supplier_notes``, ``amendment_reference``
                and order changes of your own, which win over the amendment's).

        Raises:
            RequestRefused: 404, no amendment with that id was answered 202.
            RefusedEvent: the engine refused it (it is no longer in flight, say).
        """
        answered = self.ledger.find(tenant, AMENDMENT, amendment_id)
        if answered is None or answered.owes is None or answered.order_id is None:
            raise RequestRefused(
                404, f"no amendment {amendment_id} of tenant {tenant} was answered 202"
            )
        record = self.engine.store.load(answered.order_id)
        changes = _amendment_changes(SPECS[record.order_type], record, answered.request or {})
        given = dict(data or {})
        event = {
            **given,
            "amendment_id": amendment_id,
            "order": {**changes, **dict(given.get("order") or {})},
        }
        return self.engine.apply(answered.order_id, Event.ACCEPT_AMENDMENT, event)

    # --- what each request comes to ------------------------------------------------------------

    def _plan_order(
        self, sent: _Headers, tenant: str, gateway_id: int, data: Mapping[str, Any]
    ) -> _Outcome:
        spec, order = _order_of(data)
        key = f"{tenant}:{gateway_id}"
        request = OrderRequest(
            tenant, spec.order_type, gateway_id, data, sent.request_id, sent.conversation_id
        )
        decision = self.logic.decide_order(request)
        if isinstance(decision, Reject):
            return _Outcome(error_reply(422, *decision.reasons), key)
        answered_with: OrderStatus | None = None
        if isinstance(decision, Acknowledge):
            answered_with = OrderStatus.ACKNOWLEDGED
            order = {**order, "supplierOrderReference": decision.supplier_order_reference}
        elif isinstance(decision, Commit):
            answered_with = OrderStatus.IN_PROGRESS
            order = {
                **order,
                "supplierOrderReference": decision.supplier_order_reference,
                "committedDate": _wire_date(decision.committed_date),
                "targetDate": _wire_date(decision.target_date),
            }
        elif not isinstance(decision, Later):
            raise DecisionNotAllowed(f"decide_order returned {decision!r}, not a decision")

        def action() -> dict[str, Any] | None:
            try:
                self.engine.accept_order(
                    spec.order_type,
                    order,
                    conversation_id=sent.conversation_id,
                    answered_with=answered_with,
                    event_id=f"supplier-api:order:{gateway_id}",
                )
            except OrderExists:
                raise OrderExists(key) from None
            except (RefusedEvent, InvalidOrder) as exc:
                if answered_with is None:
                    raise  # the order itself (checked before, so this is not expected)
                raise DecisionNotAllowed(
                    f"decide_order's {decision!r} for order {key} breaks the contract: "
                    f"{exc.message}"
                ) from None
            if answered_with is None:
                return None
            document: dict[str, Any] = json.loads(json.dumps(self.engine.order(key).document))
            return document

        if answered_with is None:
            return _Outcome(Reply(202), key, OWES[ORDER], action)
        return _Outcome(Reply(201), key, None, action)

    def _plan_amendment(
        self,
        sent: _Headers,
        tenant: str,
        gateway_id: int,
        order_gid: int,
        data: Mapping[str, Any],
    ) -> _Outcome:
        record = self._order(tenant, order_gid, data)
        spec = SPECS[record.order_type]
        allowed = spec.allowed(record.status)
        later, now = Event.AMENDMENT_RECEIVED in allowed, Event.AMENDED_IN_201 in allowed
        if not later and not now:
            raise RequestRefused(
                422, _not_possible("amended", order_gid, record, spec), order_id=record.order_id
            )
        changes = _amendment_changes(spec, record, data)
        request = AmendmentRequest(
            tenant,
            gateway_id,
            record,
            changes,
            data,
            sent.request_id,
            sent.conversation_id,
            can_apply_now=now,
        )
        decision = self.logic.decide_amendment(request)
        event_id = f"supplier-api:amendment:{gateway_id}"
        key = record.order_id
        if isinstance(decision, Reject):
            return _Outcome(error_reply(422, *decision.reasons), key)
        if isinstance(decision, Later):
            data_later = {"amendment_id": gateway_id, "event_id": event_id}
            return _Outcome(
                Reply(202),
                key,
                OWES[AMENDMENT],
                lambda: _none(self.engine.apply(key, Event.AMENDMENT_RECEIVED, data_later)),
            )
        if isinstance(decision, Apply) and now:
            body = {"supplierReference": decision.supplier_reference, **data}
            data_now = {"order": dict(changes), "event_id": event_id}
            return _Outcome(
                Reply(201, body),
                key,
                None,
                lambda: _none(self.engine.apply(key, Event.AMENDED_IN_201, data_now)),
            )
        raise DecisionNotAllowed(
            f"decide_amendment returned {decision!r} for order {key} in {record.status}, where "
            "only Reject or Later may answer (a 201 is not possible there: decisions L22)"
        )

    def _plan_cancellation(
        self,
        sent: _Headers,
        tenant: str,
        gateway_id: int,
        order_gid: int,
        reason: str,
        data: Mapping[str, Any],
    ) -> _Outcome:
        record = self._order(tenant, order_gid, data)
        key = record.order_id
        spec = SPECS[record.order_type]
        allowed = spec.allowed(record.status)
        later, now = Event.CANCELLATION_RECEIVED in allowed, Event.CANCELLED_IN_201 in allowed
        if not later and not now:
            raise RequestRefused(
                422, _not_possible("cancelled", order_gid, record, spec), order_id=key
            )
        if record.status in self.no_cancellation_in:
            raise RequestRefused(
                422,
                f"Order {order_gid} is {record.status}, past the supplier's point of no return: "
                "it can no longer be cancelled",
                order_id=key,
            )
        if reason not in spec.cancellation_reasons:
            reasons = ", ".join(sorted(spec.cancellation_reasons))
            raise RequestRefused(
                422,
                f"reasonCode {reason} is not a reason to cancel this order; use one of: {reasons}",
                order_id=key,
            )
        request = CancellationRequest(
            tenant,
            gateway_id,
            record,
            reason,
            data,
            sent.request_id,
            sent.conversation_id,
            can_apply_now=now,
        )
        decision = self.logic.decide_cancellation(request)
        ids: dict[str, Any] = {
            "cancellation_id": gateway_id,
            "cancellation_reason": reason,
            "event_id": f"supplier-api:cancellation:{gateway_id}",
        }
        if isinstance(decision, Reject):
            return _Outcome(error_reply(422, *decision.reasons), key)
        if isinstance(decision, Later):
            return _Outcome(
                Reply(202),
                key,
                OWES[CANCELLATION],
                lambda: _none(self.engine.apply(key, Event.CANCELLATION_RECEIVED, ids)),
            )
        if isinstance(decision, Apply) and now:
            ids["cancellation_reference"] = decision.supplier_reference
            body = {
                "supplierReference": decision.supplier_reference,
                "id": gateway_id,
                "orderId": order_gid,
                "reasonCode": reason,
            }
            return _Outcome(
                Reply(201, body),
                key,
                None,
                lambda: _none(self.engine.apply(key, Event.CANCELLED_IN_201, ids)),
            )
        raise DecisionNotAllowed(
            f"decide_cancellation returned {decision!r} for order {key} in {record.status}, "
            "where only Reject or Later may answer"
        )

    def _order(self, tenant: str, order_gid: int, data: Mapping[str, Any]) -> OrderRecord:
        """The order a request names: ``TENANT:orderId``, else (an unsolicited cease, keyed by
        the supplier's reference) the ``supplierOrderReference`` the request gives.

        Raises:
            RequestRefused: 404, no such order of this tenant; 422, the reference given is not
                the order's.
        """
        reference = data.get("supplierOrderReference")
        candidates = [f"{tenant}:{order_gid}"]
        if isinstance(reference, str) and reference:
            candidates.append(reference)
        for key in candidates:
            try:
                record = self.engine.store.load(key)
            except OrderNotFound:
                continue
            document = record.document
            if document.get("tenant") not in (None, tenant):
                continue
            if document.get("id") not in (None, order_gid):
                continue
            held = document.get("supplierOrderReference")
            if reference is not None and held is not None and reference != held:
                raise RequestRefused(
                    422,
                    f"supplierOrderReference {reference!r} is not the reference of order "
                    f"{order_gid} ({held!r})",
                    order_id=key,
                )
            return record
        raise RequestRefused(404, f"Order {order_gid} of tenant {tenant} is not known")


# --- parsing -------------------------------------------------------------------------------------


def _headers(headers: Mapping[str, str], *, tenant_required: bool) -> _Headers:
    lower = {name.lower(): value for name, value in headers.items()}
    values: dict[str, str | None] = {}
    for name in ("X-Request-ID", "X-Conversation-ID", "Tenant"):
        value = lower.get(name.lower())
        if value is None:
            if name != "Tenant" or tenant_required:
                raise RequestRefused(400, f"{name}: required header missing")
            values[name] = None
            continue
        try:
            values[name] = check_identifier(f"header {name}", value)
        except InvalidOrder as exc:
            raise RequestRefused(400, exc.message) from None
    request_id, conversation_id = values["X-Request-ID"], values["X-Conversation-ID"]
    assert request_id is not None
    assert conversation_id is not None
    return _Headers(request_id, conversation_id, values["Tenant"])


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestRefused(400, f"the body is a JSON {type(data).__name__}, not an object")
    return data


def _gateway_id(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if value is None:
        raise RequestRefused(400, f"{name}: required")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
        raise RequestRefused(422, f"{name}: must be a whole number of at least 1, not {value!r}")
    return value


def _tenant(data: Mapping[str, Any]) -> str:
    tenant = data.get("tenant")
    if tenant is None:
        raise RequestRefused(400, "tenant: required")
    if not isinstance(tenant, str) or not 1 <= len(tenant) <= TENANT_MAX or ":" in tenant:
        raise RequestRefused(
            422, f"tenant: must be 1 to {TENANT_MAX} characters (no ':'), not {tenant!r}"
        )
    try:
        return check_identifier("tenant", tenant)
    except InvalidOrder as exc:
        raise RequestRefused(422, exc.message) from None


def _reason_code(data: Mapping[str, Any]) -> str:
    reason = data.get("reasonCode")
    if reason is None:
        raise RequestRefused(400, "reasonCode: required")
    valid = isinstance(reason, str) and 1 <= len(reason) <= _REASON_MAX
    if not valid or not all(c.isupper() or c == "_" for c in reason) or not reason.isascii():
        raise RequestRefused(422, f"reasonCode: must match ^[A-Z_]{{1,30}}, not {reason!r}")
    return str(reason)


def _order_of(data: Mapping[str, Any]) -> tuple[OrderTypeSpec, dict[str, Any]]:
    """The order type a create request places and the order as the engine takes it.

    Raises:
        RequestRefused: 400, a mandatory field is missing; 422, a field is invalid.
    """
    wire_type = data.get("orderType")
    if wire_type is None:
        raise RequestRefused(400, "orderType: required")
    placed = ORDER_TYPES.get(wire_type) if isinstance(wire_type, str) else None
    if placed is None:
        known = ", ".join(ORDER_TYPES)
        raise RequestRefused(
            422, f"orderType {wire_type!r}: not an order type; use one of: {known}"
        )
    spec = SPECS[placed]
    order = dict(data)
    if "orderType" not in _aliases(spec):
        del order["orderType"]  # the variant is the order type itself (cease, modify)
    for owned in ("status", "supplierOrderReference", "committedDate", "targetDate"):
        if owned in order:
            raise RequestRefused(422, f"{owned}: set by the supplier's answer, not by the order")
    try:
        spec.order_model.model_validate({**order, "status": spec.chart.initial})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        status = 400 if any(err["type"] == "missing" for err in errors) else 422
        raise RequestRefused(
            status,
            *(f"{'.'.join(str(p) for p in err['loc']) or 'order'}: {err['msg']}" for err in errors),
        ) from None
    return spec, order


def _aliases(spec: OrderTypeSpec) -> set[str]:
    return {info.alias or name for name, info in spec.order_model.model_fields.items()}


def _amendment_changes(
    spec: OrderTypeSpec, record: OrderRecord, data: Mapping[str, Any]
) -> dict[str, Any]:
    """The order changes an amendment asks for, in the engine's convention: each field replaced
    whole, ``None`` removing it. An empty value or array removes the field; a contact changes
    only in the parts given; ``serviceCharacteristics`` (top level in the amendment) replaces
    the whole set wherever the order type keeps it.

    Raises:
        RequestRefused: 422, the amendment changes nothing or a field is invalid.
    """
    document = record.document
    changes: dict[str, Any] = {}
    for name, given in data.items():
        if name in _NOT_CHANGES:
            continue
        value = None if given in ("", [], {}) else given
        if name == "serviceCharacteristics" and spec.characteristics is not None:
            top = spec.characteristics[0]
            changed = spec.with_characteristics(document, list(value or []))
            changes[top] = changed.get(top)
            continue
        if name in _CONTACTS and isinstance(value, dict) and isinstance(document.get(name), dict):
            value = {**document[name], **value}
        changes[name] = value
    if not changes:
        raise RequestRefused(
            422, "the amendment changes nothing: give at least one field", order_id=record.order_id
        )
    try:
        apply_changes(spec, document, changes)
    except EngineError as exc:
        raise RequestRefused(422, exc.message, order_id=record.order_id) from None
    return changes


def _not_possible(done: str, gateway_id: int, record: OrderRecord, spec: OrderTypeSpec) -> str:
    if (
        not any(
            edge.step.event in (Event.AMENDMENT_RECEIVED, Event.AMENDED_IN_201)
            for edge in spec.edges
        )
        and done == "amended"
    ):
        kind = spec.order_type.value.replace("_", " ")
        return f"Order {gateway_id} is an {kind}, which cannot be amended"
    if record.status == OrderStatus.PENDING_CANCELLATION:
        return f"Order {gateway_id} has a cancellation request in progress"
    return f"Order {gateway_id} is {record.status}: it can no longer be {done}"


def _wire_date(value: datetime | str) -> str:
    return format_datetime(value) if isinstance(value, datetime) else value


def _replay(prior: Answered, fingerprint: str) -> Reply:
    if prior.fingerprint != fingerprint:
        return error_reply(
            422,
            f"{prior.kind} id {prior.gateway_id} was already used for a different request; "
            "each request needs its own id",
        )
    return Reply(prior.status_code, prior.response)


def _none(_: object) -> None:
    return None
