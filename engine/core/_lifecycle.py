"""What happens when a step fires: order changes, rules, the return stack and the KCI.

:func:`run_step` is the one callback every transition runs, before ``transitions`` moves the
state: it works out the new order document, checks the step's rules and the contract on the KCI it
would send, and only then updates the working record. Any refusal leaves the record as it was
(and the engine throws the working copy away in any case).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidEventData
from ._documents import apply_changes
from ._machine import RETURN, RETURN_RESOLVED, Firing, Step, return_target
from ._rules import answered_amendment, missing, violation
from .codes import (
    AMENDMENT_RESULTS,
    CANCELLATION_RESULTS,
    FINAL_STATUSES,
    WAITING_STATUSES,
    OrderStatus,
)
from .events import Event
from .records import Kci, RequestRef
from .wire import ORDER_PROPERTY, ContractRuleError, check_contract, format_datetime

#: Events that may set committedDate on an order that already has one (the tenant drives it).
_MAY_CHANGE_COMMITTED_DATE = frozenset({Event.ACCEPT_AMENDMENT})

#: Event data fields that only some events use; anything else given is refused as a mistake.
_USED_BY: dict[str, frozenset[Event]] = {
    "amendment_id": frozenset(
        {Event.AMENDMENT_RECEIVED, Event.ACCEPT_AMENDMENT, Event.REJECT_AMENDMENT}
    ),
    "cancellation_id": frozenset(
        {Event.CANCELLATION_RECEIVED, Event.ACCEPT_CANCELLATION, Event.REJECT_CANCELLATION}
    ),
    "cancellation_reason": frozenset({Event.CANCELLATION_RECEIVED}),
    "resolves_request": frozenset({Event.ACCEPT_AMENDMENT}),
}
_USED_BY["amendment_reference"] = _USED_BY["amendment_id"]
_USED_BY["cancellation_reference"] = _USED_BY["cancellation_id"]
_KCI_FIELDS = (
    "problem_code",
    "text",
    "supplier_codes",
    "issued_on",
    "order",
    "service_characteristics",
)
#: A synchronous 201 answer may carry order details (the supplier order number, dates): the
#: gateway passes them on itself.
_SYNC_EVENTS = frozenset({Event.ACKNOWLEDGED_IN_201, Event.COMMITTED_IN_201})
_SYNC_CHANGES = frozenset({"order", "service_characteristics"})
_STATUS = {status.value: status for status in OrderStatus}


def run_step(step: Step, firing: Firing, dest: str) -> None:
    """Apply ``step`` to ``firing.record``, moving it (with ``transitions``) to ``dest``.

    Raises:
        RefusedEvent: a rule or the contract refused the event; the record is unchanged.
    """
    record, data = firing.record, firing.data
    _check_data_use(step, firing)
    if data.changes_order:
        try:
            firing.new_document = apply_changes(
                record.order_type, record.document, data.order, data.service_characteristics
            )
        except InvalidEventData as exc:
            raise InvalidEventData(
                f"order {record.order_id}: event '{firing.event}' in status {record.status} "
                f"refused: {exc.message}",
                order_id=record.order_id,
                status=record.status,
                event=firing.event.value,
            ) from None
    for rule in step.rules:
        rule.check(firing)
    document = firing.new_document if firing.new_document is not None else record.document
    _check_committed_date(firing, document)
    if document.get("status") != dest:
        document = {**document, "status": dest}
    answered = _answered_request(step, firing)
    kci = _build_kci(step, firing, document, answered) if step.reason else None
    # Every check has passed: from here on the working record only changes.
    _track_requests(step, firing)
    _move_stack(step, firing, dest)
    record.document = document
    if kci is not None:
        firing.kcis.append(kci)
        record.next_sequence += 1
        record.last_issued_on = kci.issued_on


def _check_data_use(step: Step, firing: Firing) -> None:
    given = firing.data.model_fields_set
    for name in given:
        events = _USED_BY.get(name)
        if events is not None and firing.event not in events:
            raise InvalidEventData(
                f"order {firing.record.order_id}: {name} is not used by event '{firing.event}' "
                f"(status {firing.record.status})",
                order_id=firing.record.order_id,
                status=firing.record.status,
                event=firing.event.value,
            )
    if step.reason is None:
        for name in _KCI_FIELDS:
            if name in given and not (name in _SYNC_CHANGES and firing.event in _SYNC_EVENTS):
                raise InvalidEventData(
                    f"order {firing.record.order_id}: {name} given, but event "
                    f"'{firing.event}' sends no KCI (status {firing.record.status}): the tenant "
                    "would never hear of it",
                    order_id=firing.record.order_id,
                    status=firing.record.status,
                    event=firing.event.value,
                )


def _check_committed_date(firing: Firing, document: dict[str, Any]) -> None:
    before = firing.record.document.get("committedDate")
    if (
        before is not None
        and document.get("committedDate") != before
        and firing.event not in _MAY_CHANGE_COMMITTED_DATE
    ):
        raise violation(
            firing,
            f"committedDate is set once at COMMITTED ({before}) and never changes; "
            "move targetDate instead",
        )


def _answered_request(step: Step, firing: Firing) -> tuple[str, RequestRef] | None:
    if step.reason in AMENDMENT_RESULTS:
        return "serviceOrderAmendment", answered_amendment(firing)
    if step.reason in CANCELLATION_RESULTS and firing.event is not Event.CANCEL:
        pending = firing.record.cancellation
        if pending is not None:
            return "serviceOrderCancellation", pending
    return None


def _track_requests(step: Step, firing: Firing) -> None:
    record, event = firing.record, firing.event
    if event is Event.AMENDMENT_RECEIVED:
        ref = firing.data.amendment
        assert ref is not None  # the step's rule refused the event otherwise
        record.amendments.append(ref)
    elif event in (Event.ACCEPT_AMENDMENT, Event.REJECT_AMENDMENT):
        record.amendments.remove(answered_amendment(firing))
    elif event is Event.CANCELLATION_RECEIVED:
        record.cancellation = firing.data.cancellation
    elif event in (Event.ACCEPT_CANCELLATION, Event.REJECT_CANCELLATION):
        record.cancellation = None


def _move_stack(step: Step, firing: Firing, dest: str) -> None:
    record = firing.record
    if dest in FINAL_STATUSES:
        record.return_stack.clear()
        record.amendments.clear()
        record.cancellation = None
    elif step.dest in (RETURN, RETURN_RESOLVED):
        _, pops = return_target(step, record.return_stack, firing.data.resolves_request)
        del record.return_stack[len(record.return_stack) - pops :]
    elif step.dest is not None and dest in WAITING_STATUSES and dest != record.status:
        record.return_stack.append(record.status)


def _build_kci(
    step: Step,
    firing: Firing,
    document: dict[str, Any],
    answered: tuple[str, RequestRef] | None,
) -> Kci:
    record, data = firing.record, firing.data
    reason = step.reason
    assert reason is not None
    order = document
    if answered is not None:
        prefix, ref = answered
        order = dict(document)
        if ref.id is not None:
            order[prefix + "Id"] = ref.id
        if ref.reference is not None:
            order[prefix + "Reference"] = ref.reference
    try:
        check_contract(
            record.order_type,
            reason,
            order,
            problem_code=data.problem_code,
            text=data.text,
            supplier_codes=data.supplier_codes,
        )
    except ContractRuleError as exc:
        if exc.missing:
            raise missing(firing, exc.field, exc.rule) from None
        raise violation(firing, f"{exc.field}: {exc.rule}") from None
    issued_on = _issued_on(firing)
    kci_id = firing.new_id()
    body: dict[str, Any] = {
        "id": kci_id,
        "sequenceNumber": record.next_sequence,
        "issuedOn": format_datetime(issued_on),
        "reasonCode": reason,  # StrEnum members: JSON-encode as their values, no .value lookup
    }
    if data.problem_code is not None:
        body["problemCode"] = data.problem_code
    if data.text is not None:
        body["text"] = data.text
    if data.supplier_codes is not None:
        body["supplierCodes"] = list(data.supplier_codes)
    body[ORDER_PROPERTY[record.order_type]] = order
    return Kci(
        kci_id=kci_id,
        order_id=record.order_id,
        sequence_number=record.next_sequence,
        reason_code=reason,
        status=_STATUS[order["status"]],
        issued_on=issued_on,
        body=body,
        event=firing.event.value,
    )


def _issued_on(firing: Firing) -> datetime:
    last = firing.record.last_issued_on
    given = firing.data.issued_on
    moment = given or firing.now
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    if moment.microsecond % 1000:  # issuedOn is sent to the millisecond
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if last is not None and moment < last:
        if given is not None:
            raise violation(
                firing,
                f"issuedOn {format_datetime(moment)} is earlier than the order's last KCI "
                f"({format_datetime(last)}); issuedOn never goes backwards",
            )
        moment = last
    return moment
