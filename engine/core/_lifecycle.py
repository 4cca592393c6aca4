"""What firing a step does: the order's changes, the rules, the return stack and the KCI.

:func:`run_step` is the callback every transition runs before ``transitions`` moves the state. It
works out the new order document, checks the step's rules and the contract on the KCI it would
send (:func:`~.contract.check_kci`, with the order's history), and only then updates the working
record. Any refusal leaves the record as it was (and the engine throws the working copy away in
any case). :func:`takes` decides which of an event's edges applies, from the return stack.

The return stack (docs/decisions.md L1, L2): a step into a waiting status pushes the status it
came from; a returning step pops back to it, or past a resolvable wait (PENDING) when the answer
resolved what it waited for; a step from a waiting status to one that is neither waiting nor
final ends the wait (the stack empties); a final status clears everything. So the stack is
empty exactly when the order is not waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ContractViolation, EventNotAllowed, InvalidEventData
from ._documents import apply_changes
from ._rules import answered_amendment, answered_cancellation, violation
from .chart import RETURN_RESOLVED, Chart, Edge, Step
from .codes import OrderStatus
from .contract import REASONS, History, Request, check_kci, check_order
from .events import Event, EventData
from .records import Kci, OrderRecord, RequestRef
from .wire import format_datetime

if TYPE_CHECKING:
    from .spec import OrderTypeSpec

#: Event data fields that only steps with a rule reading them (or returning past a resolved
#: wait, for ``resolves_request``) may be given; anything else given is refused as a mistake.
_REQUEST_FIELDS = frozenset(
    {
        "amendment_id",
        "amendment_reference",
        "cancellation_id",
        "cancellation_reference",
        "cancellation_reason",
        "resolves_request",
    }
)
#: Event data fields that only make sense on a KCI.
_KCI_FIELDS = (
    "problem_code",
    "text",
    "supplier_codes",
    "supplier_notes",
    "issued_on",
    "order",
    "service_characteristics",
)
#: What a step the gateway tells the tenant of may still carry: the order's details.
_ORDER_FIELDS = frozenset({"order", "service_characteristics"})
_STATUS = {status.value: status for status in OrderStatus}
_NONE_GIVEN: frozenset[str] = frozenset()


@dataclass(slots=True)
class Firing:
    """One event being applied: the working record, the data, and what it produced."""

    spec: OrderTypeSpec
    record: OrderRecord
    event: Event
    data: EventData
    now: datetime
    new_id: Callable[[], str]
    kcis: list[Kci] = field(default_factory=list)
    new_document: dict[str, Any] | None = None


# --- Which edge ----------------------------------------------------------------------------------


def return_target(chart: Chart, step: Step, stack: list[str], resolves: bool) -> tuple[str, int]:
    """Where a returning step goes from ``stack`` and how many entries it pops: the status the
    wait was entered from, or (RETURN_RESOLVED, when the answer resolves a resolvable wait) the
    one before that."""
    if not stack:
        return "", 0
    target = stack[-1]
    state = chart.state(target)
    resolvable = state is not None and state.resolvable
    if step.dest == RETURN_RESOLVED and resolvable and resolves and len(stack) > 1:
        return stack[-2], 2
    return target, 1


def takes(edge: Edge, firing: Firing) -> bool:
    """Whether ``edge`` is the one its event takes for this order."""
    if edge.back_to is not None:
        target, _ = return_target(
            firing.spec.chart, edge.step, firing.record.return_stack, firing.data.resolves_request
        )
        return target == edge.back_to
    return edge.condition is None or edge.condition.test(firing)


def not_taken(edges: Iterable[Edge], firing: Firing, allowed: Iterable[Event]) -> EventNotAllowed:
    """The refusal when an event allowed in the status applies to none of its edges for this
    order: which situations it applies in, and which this order is in."""
    record = firing.record
    where = [
        edge.condition_label or "always"
        for edge in edges
        if edge.step.event is firing.event and edge.source == record.status
    ]
    was = f"this order was {record.return_stack[-1]}" if record.return_stack else "it is not"
    return EventNotAllowed(
        order_id=record.order_id,
        status=record.status,
        event=firing.event.value,
        allowed=(e.value for e in allowed if e is not firing.event),
        why=f"it applies when {' or '.join(dict.fromkeys(where))}, and {was}",
    )


# --- Firing a step -------------------------------------------------------------------------------


def run_step(edge: Edge, firing: Firing) -> None:
    """Apply ``edge``'s step to ``firing.record``, which ``transitions`` then moves to the
    edge's destination.

    Raises:
        RefusedEvent: a rule or the contract refused the event; the record is unchanged.
    """
    record, data, step, spec = firing.record, firing.data, edge.step, firing.spec
    if step.reason is None or not data.__pydantic_fields_set__.isdisjoint(_REQUEST_FIELDS):
        _check_data_use(step, firing)  # otherwise nothing there can refuse it
    if data.order or data.service_characteristics:  # data.changes_order, without the call
        firing.new_document = _changed(firing)
    for rule in step.rules:
        rule.check(firing)
    before = record.document
    document = firing.new_document
    if document is not None:
        document["status"] = edge.dest  # the changed document is this event's own copy
    elif before.get("status") != edge.dest:
        document = {**before, "status": edge.dest}
    else:
        document = before
    try:
        if step.reason is None:
            check_order(edge.dest, document, spec)
            kci = None
        else:
            kci = _build_kci(edge, firing, document)
    except ContractViolation as exc:
        raise exc.at(
            order_id=record.order_id, status=record.status, event=firing.event.value
        ) from None
    # Every check has passed: from here on the working record only changes.
    for rule in step.rules:
        if rule.record is not None:
            rule.record(firing)
    _move_stack(edge, firing)
    record.document = document
    if kci is not None:
        firing.kcis.append(kci)
        record.next_sequence += 1
        record.last_issued_on = kci.issued_on


def _changed(firing: Firing) -> dict[str, Any]:
    record, data = firing.record, firing.data
    try:
        return apply_changes(firing.spec, record.document, data.order, data.service_characteristics)
    except InvalidEventData as exc:
        raise InvalidEventData(
            f"order {record.order_id}: event '{firing.event}' in status {record.status} "
            f"refused: {exc.message}",
            order_id=record.order_id,
            status=record.status,
            event=firing.event.value,
        ) from None


def _check_data_use(step: Step, firing: Firing) -> None:
    """Refuse request fields no rule of the step reads, and KCI fields on a step that sends
    none (run_step calls it only for such steps, or when request fields were given)."""
    given = firing.data.__pydantic_fields_set__
    used = {name for rule in step.rules for name in rule.uses}
    if step.dest == RETURN_RESOLVED:
        used.add("resolves_request")
    for name in given & _REQUEST_FIELDS - used:
        raise _unused(firing, f"{name} is not used by event '{firing.event}'")
    if step.reason is None:
        for name in _KCI_FIELDS:
            if name in given and not (step.told_by_gateway and name in _ORDER_FIELDS):
                raise _unused(
                    firing,
                    f"{name} given, but event '{firing.event}' sends no KCI",
                    "the tenant would never hear of it",
                )


def _unused(firing: Firing, what: str, why: str = "") -> InvalidEventData:
    record = firing.record
    return InvalidEventData(
        f"order {record.order_id}: {what} (status {record.status})" + (f": {why}" if why else ""),
        order_id=record.order_id,
        status=record.status,
        event=firing.event.value,
    )


def _answered(step: Step, firing: Firing) -> tuple[Request, RequestRef] | None:
    """The tenant request the step answers and its reference (as the KCI carries it)."""
    for rule in step.rules:
        if rule.answers is Request.AMENDMENT:
            return rule.answers, answered_amendment(firing)[1]
        if rule.answers is Request.CANCELLATION:
            return rule.answers, answered_cancellation(firing)
    return None


def _move_stack(edge: Edge, firing: Firing) -> None:
    record, chart = firing.record, firing.spec.chart
    state = chart.state(edge.dest)
    if state is not None and state.final:
        record.return_stack.clear()
        record.amendments.clear()
        record.cancellation = None
    elif edge.step.returns:
        _, pops = return_target(chart, edge.step, record.return_stack, firing.data.resolves_request)
        del record.return_stack[len(record.return_stack) - pops :]
    elif edge.dest != record.status:
        if state is not None and state.waiting:
            record.return_stack.append(record.status)
        else:
            record.return_stack.clear()  # out of a wait into a working status: the wait ended


def _build_kci(edge: Edge, firing: Firing, document: dict[str, Any]) -> Kci:
    record, data, step = firing.record, firing.data, edge.step
    reason = step.reason
    assert reason is not None
    answered = _answered(step, firing) if step.rules else None
    order = document
    if answered is not None:
        request, ref = answered
        order = dict(document)
        if ref.id is not None:
            order[request.id_field] = ref.id
        if ref.reference is not None:
            order[request.reference_field] = ref.reference
    notes = None if data.supplier_notes is None else [note.wire() for note in data.supplier_notes]
    rule = REASONS[reason]
    check_kci(
        firing.spec,
        reason,
        order,
        problem_code=data.problem_code,
        text=data.text,
        supplier_codes=data.supplier_codes,
        supplier_notes=notes,
        answering=answered is not None,
        # before, given, changed (positional: cheaper on every KCI). Only the rules that read
        # them (``gives``, ``news``) pay for the last two.
        history=History(
            record.document,
            _given(data) if rule.gives else _NONE_GIVEN,
            bool(rule.news) and _differs(record.document, document),
        ),
    )
    issued_on = _issued_on(firing)
    kci_id = firing.new_id()
    # Plain strings, not StrEnum members: pydantic_core encodes a member through its ``value``
    # property (a Python call), a str directly; both compare equal to the member.
    body: dict[str, Any] = {
        "id": kci_id,
        "sequenceNumber": record.next_sequence,
        "issuedOn": format_datetime(issued_on),
        "reasonCode": reason._value_,
    }
    if data.problem_code is not None:
        body["problemCode"] = data.problem_code._value_
    if data.text is not None:
        body["text"] = data.text
    if data.supplier_codes is not None:
        body["supplierCodes"] = list(data.supplier_codes)
    if notes is not None:
        body["supplierNotes"] = notes
    body[firing.spec.kci_property] = order
    # Positional: a named tuple's __new__ takes keywords at about a third more.
    return Kci(
        kci_id,
        record.order_id,
        record.next_sequence,
        reason,
        _STATUS[order["status"]],
        issued_on,
        body,
        firing.event._value_,
    )


def _given(data: EventData) -> frozenset[str]:
    """The wire fields the event's order changes set (removals do not count)."""
    return frozenset(key for key, value in (data.order or {}).items() if value is not None)


def _differs(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return before is not after and before != after


def _issued_on(firing: Firing) -> datetime:
    last = firing.record.last_issued_on
    given = firing.data.issued_on
    moment = given or firing.now
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    extra = moment.microsecond % 1000
    if extra:  # issuedOn is sent to the millisecond (a subtraction costs less than replace())
        moment -= timedelta(microseconds=extra)
    if last is not None and moment < last:
        if given is not None:
            raise violation(
                firing,
                f"issuedOn {format_datetime(moment)} is earlier than the order's last KCI "
                f"({format_datetime(last)}); issuedOn never goes backwards",
            )
        moment = last
    return moment
