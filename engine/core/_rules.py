"""Guards on chart steps beyond the contract: the bookkeeping of the tenant's requests.

What a KCI must carry is in the contract tables (:mod:`.contract`) and applies to every step
that sends one. The rules here belong to particular steps: an amendment or cancellation request
is named when it arrives, answers name a request in flight, and a supplier who cancels says why.
Their labels appear on the statecharts; each :class:`~.chart.Rule` lists the event data fields it
reads, and an event may be given those fields only on steps with a rule that reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ContractViolation, MissingField
from .chart import Rule
from .contract import Request
from .records import RequestRef

if TYPE_CHECKING:
    from ._lifecycle import Firing


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


def answered_amendment(firing: Firing) -> tuple[RequestRef, RequestRef]:
    """The amendment in flight that the event answers, and its reference as the answer's KCI
    carries it: the references given on receipt, completed by those given with the answer.

    Raises:
        MissingField: the event names no amendment.
        ContractViolation: none in flight matches, or the answer contradicts a reference given
            on receipt.
    """
    ref = firing.data.amendment
    if ref is None:
        raise missing(
            firing,
            "amendment_id",
            "the result of an amendment references it (amendment_id and/or amendment_reference)",
        )
    for known in firing.record.amendments:
        if known.matches(ref):
            return known, _completed(firing, "amendment", known, ref)
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
    spec = firing.spec
    if reason is not None and reason not in spec.cancellation_reasons:
        kind = (
            "a tenant-placed order"
            if spec.placed_by_tenant
            else f"an {spec.order_type.value.replace('_', ' ')}"
        )
        raise violation(firing, f"{reason} is not a cancellation reason for {kind}")


def answered_cancellation(firing: Firing) -> RequestRef:
    """The reference of the cancellation in flight that the event answers, completed by the
    references given with the answer.

    Raises:
        MissingField: the event names no cancellation.
        ContractViolation: it is not the one in flight, or contradicts its references.
    """
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
    return _completed(firing, "cancellation", pending, ref)


def _completed(firing: Firing, kind: str, known: RequestRef, given: RequestRef) -> RequestRef:
    """``known`` with what ``given`` adds; a reference that contradicts one given before is
    refused rather than silently dropped or silently preferred."""
    for part in ("id", "reference"):
        before, now = getattr(known, part), getattr(given, part)
        if before is not None and now is not None and before != now:
            raise violation(
                firing,
                f"{kind} {known.label()} was received with {part} {before!r}; the answer gives "
                f"{part} {now!r}",
            )
    return RequestRef(
        known.id if known.id is not None else given.id,
        known.reference if known.reference is not None else given.reference,
    )


def _answers_amendment(firing: Firing) -> None:
    answered_amendment(firing)


def _answers_cancellation(firing: Firing) -> None:
    answered_cancellation(firing)


def _amendment_received(firing: Firing) -> None:
    ref = firing.data.amendment
    assert ref is not None  # the rule refused the event otherwise
    firing.record.amendments.append(ref)


def _amendment_answered(firing: Firing) -> None:
    known, _ = answered_amendment(firing)
    firing.record.amendments.remove(known)


def _cancellation_received(firing: Firing) -> None:
    firing.record.cancellation = firing.data.cancellation


def _cancellation_answered(firing: Firing) -> None:
    firing.record.cancellation = None


_AMENDMENT = ("amendment_id", "amendment_reference")
_CANCELLATION = ("cancellation_id", "cancellation_reference")

TEXT_GIVEN = Rule("text", _text_given)
NAMES_NEW_AMENDMENT = Rule(
    "amendment id/reference", _names_new_amendment, _AMENDMENT, record=_amendment_received
)
ANSWERS_AMENDMENT = Rule(
    "amendment in flight",
    _answers_amendment,
    _AMENDMENT,
    answers=Request.AMENDMENT,
    record=_amendment_answered,
)
NAMES_NEW_CANCELLATION = Rule(
    "cancellation id/reference",
    _names_new_cancellation,
    (*_CANCELLATION, "cancellation_reason"),
    record=_cancellation_received,
)
ANSWERS_CANCELLATION = Rule(
    "cancellation in flight",
    _answers_cancellation,
    _CANCELLATION,
    answers=Request.CANCELLATION,
    record=_cancellation_answered,
)
