"""Contract rules that need more than one KCI body: the order's history and the event's data.

The rules every body of a reason code obeys (problemCode, text, dates, status, SERVICE_ID) live in
:func:`engine.kci.check_contract` and apply to every step that sends a KCI. The rules here are
attached to steps in the order-type charts, and their labels appear on the statecharts.
"""

from __future__ import annotations

from ..errors import ContractViolation, MissingField
from ._machine import Firing, Rule
from .codes import CancellationReason, OrderType
from .records import RequestRef

_UNSOLICITED_CANCEL_REASONS = frozenset(
    {
        CancellationReason.NO_AUTHORISATION,
        CancellationReason.CUSTOMER_NOT_AWARE,
        CancellationReason.DELIBERATE_MISLEAD,
        CancellationReason.PURCHASED_DIFFERENT_PRODUCT,
        CancellationReason.END_USER_NOT_MOVING,
    }
)


def missing(firing: Firing, field: str, why: str) -> MissingField:
    """A :class:`MissingField` error with the firing's order, status and event."""
    record = firing.record
    return MissingField(
        field, why, order_id=record.order_id, status=record.status, event=firing.event.value
    )


def violation(firing: Firing, rule: str) -> ContractViolation:
    """A :class:`ContractViolation` error with the firing's order, status and event."""
    record = firing.record
    return ContractViolation(
        rule, order_id=record.order_id, status=record.status, event=firing.event.value
    )


def _document(firing: Firing) -> dict[str, object]:
    return firing.new_document if firing.new_document is not None else firing.record.document


def _supplier_reference(firing: Firing) -> None:
    if not _document(firing).get("supplierOrderReference"):
        raise missing(
            firing,
            "supplierOrderReference",
            "the supplier assigns its order reference when it acknowledges the order "
            "(give it in order.supplierOrderReference)",
        )


def _committed_dates(firing: Firing) -> None:
    document = _document(firing)
    for name in ("committedDate", "targetDate"):
        if document.get(name) is None:
            raise missing(firing, name, "a committed order carries committedDate and targetDate")


def _before_first_kci(firing: Firing) -> None:
    if firing.record.next_sequence != 1:
        raise violation(
            firing,
            "a synchronous 201 answer is given on the create request, before any KCI was sent",
        )


def _order_changed(firing: Firing) -> None:
    if firing.new_document is None or firing.new_document == firing.record.document:
        raise violation(
            firing,
            "nothing on the order changed: give the changes in order or service_characteristics",
        )


def _new_appointment(firing: Firing) -> None:
    changes = {k: v for k, v in (firing.data.order or {}).items() if v is not None}
    if not ({"appointmentTimeslot", "appointmentSupplierReference"} & changes.keys()):
        raise missing(
            firing,
            "appointmentTimeslot",
            "a reappointment gives the new appointmentTimeslot and/or appointmentSupplierReference",
        )
    if "targetDate" not in changes:
        raise missing(firing, "targetDate", "a reappointment gives the new targetDate")


def _text_given(firing: Firing) -> None:
    if firing.data.text is None:
        raise missing(firing, "text", "say why the supplier is cancelling the order")


def _names_new_amendment(firing: Firing) -> None:
    ref = firing.data.amendment
    if ref is None:
        raise missing(
            firing, "amendment_id", "name the amendment request (amendment_id and/or reference)"
        )
    if any(known.matches(ref) for known in firing.record.amendments):
        raise violation(firing, f"amendment {ref.label()} was already received")


def _answers_amendment(firing: Firing) -> None:
    _find_amendment(firing)


def _find_amendment(firing: Firing) -> RequestRef:
    ref = firing.data.amendment
    if ref is None:
        raise missing(
            firing,
            "amendment_id",
            "the result of an amendment references it (amendment_id and/or amendment_reference)",
        )
    for known in firing.record.amendments:
        if known.matches(ref):
            return known
    in_flight = ", ".join(r.label() for r in firing.record.amendments) or "none"
    raise violation(firing, f"amendment {ref.label()} is not in flight (in flight: {in_flight})")


def _names_new_cancellation(firing: Firing) -> None:
    ref = firing.data.cancellation
    if ref is None:
        raise missing(
            firing,
            "cancellation_id",
            "name the cancellation request (cancellation_id and/or cancellation_reference)",
        )
    reason = firing.data.cancellation_reason
    unsolicited = firing.record.order_type is OrderType.UNSOLICITED_CEASE
    if reason is not None and (reason in _UNSOLICITED_CANCEL_REASONS) != unsolicited:
        kind = "an unsolicited cease" if unsolicited else "a tenant-placed order"
        raise violation(firing, f"{reason} is not a cancellation reason for {kind}")


def _answers_cancellation(firing: Firing) -> None:
    ref = firing.data.cancellation
    if ref is None:
        raise missing(
            firing,
            "cancellation_id",
            "the result of a cancellation request references it "
            "(cancellation_id and/or cancellation_reference)",
        )
    pending = firing.record.cancellation
    if pending is None or not pending.matches(ref):
        have = pending.label() if pending else "none"
        raise violation(firing, f"cancellation {ref.label()} is not in flight (in flight: {have})")


SUPPLIER_REFERENCE = Rule("supplierOrderReference known", _supplier_reference)
COMMITTED_DATES = Rule("committedDate, targetDate", _committed_dates)
BEFORE_FIRST_KCI = Rule("before any KCI", _before_first_kci)
ORDER_CHANGED = Rule("order changed", _order_changed)
NEW_APPOINTMENT = Rule("new appointment, targetDate", _new_appointment)
TEXT_GIVEN = Rule("text", _text_given)
NAMES_NEW_AMENDMENT = Rule("amendment id/reference", _names_new_amendment)
ANSWERS_AMENDMENT = Rule("amendment in flight", _answers_amendment)
NAMES_NEW_CANCELLATION = Rule("cancellation id/reference", _names_new_cancellation)
ANSWERS_CANCELLATION = Rule("cancellation in flight", _answers_cancellation)


def answered_amendment(firing: Firing) -> RequestRef:
    """The in-flight amendment the event answers (its rule has already passed)."""
    return _find_amendment(firing)
