"""The wire vocabulary of the Fibre Cafe Supplier Updates API, and the rule tables that go with it.

Every spelling here is the gateway's own (British spelling, ``CANCELLED`` with two Ls). The tables
are the single source the KCI validators, the state machines, the statecharts and the docs read
from, so a rule is stated once. Sources and the tags [D]/[I]/[?] are in
``docs/decisions.md`` and the project's fact sheet.
"""

from __future__ import annotations

from enum import StrEnum


class OrderType(StrEnum):
    """The four order lifecycles the engine runs."""

    PROVIDE = "provide"
    CEASE = "cease"
    MODIFY = "modify"
    UNSOLICITED_CEASE = "unsolicited_cease"


class ReasonCode(StrEnum):
    """The 18 reason codes a supplier may send on ``POST /kcis``."""

    CREATED = "CREATED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    COMMITTED = "COMMITTED"
    UPDATE = "UPDATE"
    ADDITIONAL = "ADDITIONAL"
    WARNING = "WARNING"
    DELAY = "DELAY"
    RESUMED = "RESUMED"
    INFORMATION_REQUIRED = "INFORMATION_REQUIRED"
    REAPPOINT = "REAPPOINT"
    REAPPOINTED = "REAPPOINTED"
    RESUBMIT = "RESUBMIT"
    AMENDED = "AMENDED"
    AMENDMENT_REJECTED = "AMENDMENT_REJECTED"
    CANCELLED = "CANCELLED"
    CANCELLATION_REJECTED = "CANCELLATION_REJECTED"
    ORDER_REJECTED = "ORDER_REJECTED"
    COMPLETED = "COMPLETED"


class OrderStatus(StrEnum):
    """Values of the order's ``status`` field (gateway-set and supplier-set)."""

    RECEIVED_BY_GATEWAY = "RECEIVED_BY_GATEWAY"
    SENT_TO_SUPPLIER = "SENT_TO_SUPPLIER"
    FAILED_TO_SEND = "FAILED_TO_SEND"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    IN_PROGRESS = "IN_PROGRESS"
    REJECTED = "REJECTED"
    PENDING = "PENDING"
    HELD = "HELD"
    PENDING_AMENDMENT = "PENDING_AMENDMENT"
    PENDING_CANCELLATION = "PENDING_CANCELLATION"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"


class Situation(StrEnum):
    """The columns of the problem-code table: the KCI situations a code is valid for."""

    CANCEL = "Cancel"
    DELAY = "Delay"
    INFORM = "Inform"
    REAPPOINT = "Reappoint"


class ProblemCode(StrEnum):
    """The 28 Fibre Cafe problem codes."""

    ACCESS_ISSUE = "ACCESS_ISSUE"
    ACTIVATION_FAILED = "ACTIVATION_FAILED"
    ADDITIONAL_WORK = "ADDITIONAL_WORK"
    APPOINTMENT_NOT_REQUIRED = "APPOINTMENT_NOT_REQUIRED"
    CAPACITY_ISSUE = "CAPACITY_ISSUE"
    COST_ISSUE = "COST_ISSUE"
    CUSTOMER_CHANGED_MIND = "CUSTOMER_CHANGED_MIND"
    FAULT_AT_NODE = "FAULT_AT_NODE"
    FAULT_AT_ONT = "FAULT_AT_ONT"
    FAULT_AT_POP = "FAULT_AT_POP"
    INFORMATION_REQUIRED = "INFORMATION_REQUIRED"
    INSTALL_FAILED = "INSTALL_FAILED"
    INVALID_REQUEST = "INVALID_REQUEST"
    LINKED_ORDER_ISSUE = "LINKED_ORDER_ISSUE"
    NETWORK_ISSUE = "NETWORK_ISSUE"
    NETWORK_UNAVAILABLE = "NETWORK_UNAVAILABLE"
    NO_LONGER_REQUIRED = "NO_LONGER_REQUIRED"
    OTHER = "OTHER"
    PLANNING_ISSUE = "PLANNING_ISSUE"
    PROPERTY_UNOCCUPIED = "PROPERTY_UNOCCUPIED"
    ROUTER_NOT_AVAILABLE = "ROUTER_NOT_AVAILABLE"
    SITE_UNSAFE = "SITE_UNSAFE"
    SUPPLIER_FAULT = "SUPPLIER_FAULT"
    SURVEY_REQUIRED = "SURVEY_REQUIRED"
    TIMED_OUT = "TIMED_OUT"
    UNABLE_TO_ATTEND = "UNABLE_TO_ATTEND"
    UNKNOWN_FAULT = "UNKNOWN_FAULT"
    WAYLEAVE_ISSUE = "WAYLEAVE_ISSUE"


class AddressType(StrEnum):
    UPRN = "UPRN"
    NAD = "NAD"
    ROBT = "ROBT"
    DISTRICT_CODE = "DistrictCode"


class ProvideOrderType(StrEnum):
    NEW = "NEW"
    START = "START"
    TAKEOVER = "TAKEOVER"
    TRANSFER = "TRANSFER"
    SWAP = "SWAP"


class UnsolicitedCeaseReason(StrEnum):
    CHANGE_OF_CP = "CHANGE_OF_CP"
    WORKING_LINE_TAKEOVER = "WORKING_LINE_TAKEOVER"
    CP_REQUEST = "CP_REQUEST"


class CancellationReason(StrEnum):
    """Reasons a tenant gives when asking to cancel (the last five are for unsolicited ceases)."""

    CUSTOMER_CHANGED_MIND = "CUSTOMER_CHANGED_MIND"
    INSTALL_FAILED = "INSTALL_FAILED"
    NETWORK_ISSUE = "NETWORK_ISSUE"
    NO_LONGER_REQUIRED = "NO_LONGER_REQUIRED"
    OTHER = "OTHER"
    NO_AUTHORISATION = "NO_AUTHORISATION"
    CUSTOMER_NOT_AWARE = "CUSTOMER_NOT_AWARE"
    DELIBERATE_MISLEAD = "DELIBERATE_MISLEAD"
    PURCHASED_DIFFERENT_PRODUCT = "PURCHASED_DIFFERENT_PRODUCT"
    END_USER_NOT_MOVING = "END_USER_NOT_MOVING"


class TimeslotClassification(StrEnum):
    WEEKDAY = "WEEKDAY"
    WEEKDAY_AM = "WEEKDAY_AM"
    WEEKDAY_PM = "WEEKDAY_PM"
    WEEKDAY_EARLY = "WEEKDAY_EARLY"
    WEEKDAY_EVENING = "WEEKDAY_EVENING"
    SATURDAY = "SATURDAY"
    SATURDAY_AM = "SATURDAY_AM"
    SATURDAY_PM = "SATURDAY_PM"
    SATURDAY_EARLY = "SATURDAY_EARLY"
    SATURDAY_EVENING = "SATURDAY_EVENING"
    SUNDAY = "SUNDAY"
    SUNDAY_AM = "SUNDAY_AM"
    SUNDAY_PM = "SUNDAY_PM"
    SUNDAY_EARLY = "SUNDAY_EARLY"
    SUNDAY_EVENING = "SUNDAY_EVENING"


# --- Rule tables -------------------------------------------------------------------------------

_C, _D, _I, _R = Situation.CANCEL, Situation.DELAY, Situation.INFORM, Situation.REAPPOINT

#: Which situations each problem code is documented as valid for. ``None`` means the public table
#: did not show that row's matrix: the engine then accepts the code in every situation.
PROBLEM_CODE_SITUATIONS: dict[ProblemCode, frozenset[Situation] | None] = {
    ProblemCode.ACCESS_ISSUE: frozenset({_C, _D, _R}),
    ProblemCode.ACTIVATION_FAILED: frozenset({_C, _D, _R}),
    ProblemCode.ADDITIONAL_WORK: frozenset({_C, _D, _R}),
    ProblemCode.APPOINTMENT_NOT_REQUIRED: frozenset({_I}),
    ProblemCode.CAPACITY_ISSUE: frozenset({_C}),
    ProblemCode.COST_ISSUE: frozenset({_C, _I}),
    ProblemCode.CUSTOMER_CHANGED_MIND: frozenset({_C, _R}),
    ProblemCode.FAULT_AT_NODE: frozenset({_C, _D, _I, _R}),
    ProblemCode.FAULT_AT_ONT: frozenset({_C, _D, _I, _R}),
    ProblemCode.FAULT_AT_POP: frozenset({_C, _D, _I, _R}),
    ProblemCode.INFORMATION_REQUIRED: frozenset({_D, _I}),
    ProblemCode.INSTALL_FAILED: frozenset({_C, _D, _R}),
    ProblemCode.INVALID_REQUEST: frozenset({_C, _D, _R}),
    ProblemCode.LINKED_ORDER_ISSUE: frozenset({_C, _D, _R}),
    ProblemCode.NETWORK_ISSUE: frozenset({_C, _D, _I, _R}),
    ProblemCode.NETWORK_UNAVAILABLE: None,
    ProblemCode.NO_LONGER_REQUIRED: None,
    ProblemCode.OTHER: None,
    ProblemCode.PLANNING_ISSUE: None,
    ProblemCode.PROPERTY_UNOCCUPIED: None,
    ProblemCode.ROUTER_NOT_AVAILABLE: None,
    ProblemCode.SITE_UNSAFE: None,
    ProblemCode.SUPPLIER_FAULT: None,
    ProblemCode.SURVEY_REQUIRED: None,
    ProblemCode.TIMED_OUT: None,
    ProblemCode.UNABLE_TO_ATTEND: None,
    ProblemCode.UNKNOWN_FAULT: None,
    ProblemCode.WAYLEAVE_ISSUE: None,
}

#: Reason codes that must carry a problemCode (the strict reading of the two sources).
PROBLEM_CODE_REQUIRED: frozenset[ReasonCode] = frozenset(
    {
        ReasonCode.WARNING,
        ReasonCode.DELAY,
        ReasonCode.REAPPOINT,
        ReasonCode.CANCELLED,
        ReasonCode.INFORMATION_REQUIRED,
        ReasonCode.ORDER_REJECTED,
        ReasonCode.AMENDMENT_REJECTED,
        ReasonCode.CANCELLATION_REJECTED,
        ReasonCode.RESUBMIT,
    }
)

#: Reason codes that must carry ``text`` (what is needed, why it was rejected).
TEXT_REQUIRED: frozenset[ReasonCode] = frozenset(
    {
        ReasonCode.INFORMATION_REQUIRED,
        ReasonCode.ORDER_REJECTED,
        ReasonCode.AMENDMENT_REJECTED,
        ReasonCode.CANCELLATION_REJECTED,
        ReasonCode.RESUBMIT,
    }
)

#: Happy-path reason codes on which a problemCode is never sent.
PROBLEM_CODE_FORBIDDEN: frozenset[ReasonCode] = frozenset(
    {ReasonCode.ACKNOWLEDGED, ReasonCode.COMMITTED, ReasonCode.COMPLETED, ReasonCode.CREATED}
)

#: The problem-code column that applies to a reason code, where one does.
REASON_SITUATION: dict[ReasonCode, Situation] = {
    ReasonCode.CANCELLED: Situation.CANCEL,
    ReasonCode.DELAY: Situation.DELAY,
    ReasonCode.INFORMATION_REQUIRED: Situation.INFORM,
    ReasonCode.REAPPOINT: Situation.REAPPOINT,
}

_ACTIVE = frozenset(
    {
        OrderStatus.SENT_TO_SUPPLIER,
        OrderStatus.ACKNOWLEDGED,
        OrderStatus.IN_PROGRESS,
        OrderStatus.HELD,
        OrderStatus.PENDING,
    }
)

#: The order statuses a KCI of each reason code may carry. ``UPDATE``, ``ADDITIONAL`` and
#: ``WARNING`` leave the status as it is, so any non-final status goes with them.
REASON_STATUSES: dict[ReasonCode, frozenset[OrderStatus]] = {
    ReasonCode.CREATED: frozenset({OrderStatus.ACKNOWLEDGED, OrderStatus.IN_PROGRESS}),
    ReasonCode.ACKNOWLEDGED: frozenset({OrderStatus.ACKNOWLEDGED}),
    ReasonCode.COMMITTED: frozenset({OrderStatus.IN_PROGRESS}),
    ReasonCode.UPDATE: _ACTIVE | {OrderStatus.PENDING_AMENDMENT, OrderStatus.PENDING_CANCELLATION},
    ReasonCode.ADDITIONAL: _ACTIVE
    | {OrderStatus.PENDING_AMENDMENT, OrderStatus.PENDING_CANCELLATION},
    ReasonCode.WARNING: _ACTIVE | {OrderStatus.PENDING_AMENDMENT, OrderStatus.PENDING_CANCELLATION},
    ReasonCode.DELAY: frozenset({OrderStatus.HELD}),
    ReasonCode.RESUMED: frozenset({OrderStatus.ACKNOWLEDGED, OrderStatus.IN_PROGRESS}),
    ReasonCode.INFORMATION_REQUIRED: frozenset({OrderStatus.PENDING}),
    ReasonCode.REAPPOINT: frozenset({OrderStatus.PENDING}),
    ReasonCode.REAPPOINTED: frozenset(
        {OrderStatus.ACKNOWLEDGED, OrderStatus.IN_PROGRESS, OrderStatus.HELD, OrderStatus.PENDING}
    ),
    ReasonCode.RESUBMIT: frozenset({OrderStatus.PENDING}),
    ReasonCode.AMENDED: _ACTIVE - {OrderStatus.SENT_TO_SUPPLIER} | {OrderStatus.PENDING_AMENDMENT},
    ReasonCode.AMENDMENT_REJECTED: _ACTIVE - {OrderStatus.SENT_TO_SUPPLIER}
    | {OrderStatus.PENDING_AMENDMENT},
    ReasonCode.CANCELLED: frozenset({OrderStatus.CANCELLED}),
    ReasonCode.CANCELLATION_REJECTED: _ACTIVE | {OrderStatus.PENDING_AMENDMENT},
    ReasonCode.ORDER_REJECTED: frozenset({OrderStatus.REJECTED}),
    ReasonCode.COMPLETED: frozenset({OrderStatus.COMPLETED}),
}

#: Statuses no event leaves.
FINAL_STATUSES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.COMPLETED}
)

#: Statuses that wait for something and return to the status they were entered from.
WAITING_STATUSES: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.HELD,
        OrderStatus.PENDING,
        OrderStatus.PENDING_AMENDMENT,
        OrderStatus.PENDING_CANCELLATION,
    }
)

#: Reason codes that carry the amendment or cancellation request reference inside the order.
AMENDMENT_RESULTS: frozenset[ReasonCode] = frozenset(
    {ReasonCode.AMENDED, ReasonCode.AMENDMENT_REJECTED}
)
CANCELLATION_RESULTS: frozenset[ReasonCode] = frozenset(
    {ReasonCode.CANCELLED, ReasonCode.CANCELLATION_REJECTED}
)


def problem_code_allowed(code: ProblemCode, reason: ReasonCode) -> bool:
    """Whether the Fibre Cafe table allows ``code`` on a KCI of ``reason``.

    Reason codes with no column (e.g. ``WARNING``, ``ORDER_REJECTED``) accept every code, and so
    do codes whose row of the table was not published.
    """
    situation = REASON_SITUATION.get(reason)
    if situation is None:
        return True
    allowed = PROBLEM_CODE_SITUATIONS[code]
    return allowed is None or situation in allowed
