"""The Fibre Cafe KCI contract as data, declared once.

Four tables say everything the contract asks of a KCI the supplier sends:

- :data:`REASONS`, one entry per reason code: the statuses its KCI may carry, whether a
  problemCode is required (and from which column of the problem-code table), whether text is
  required, the order fields it must carry or the event must give, the fields it must leave as
  they were, the tenant request it answers, the order types it is never sent on;
- :data:`STATUSES`, one entry per order status: who sets it (a supplier never sends a status
  only the gateway sets) and what an order in it carries (an acknowledged order has its
  supplierOrderReference, a committed one its committedDate and targetDate);
- :data:`PROBLEM_CODES`, the Cancel / Delay / Inform / Reappoint columns of the problem-code
  table;
- :data:`OTHER_NEEDS`: problemCode ``OTHER`` comes with text or supplierCodes.

:func:`check_kci` applies them to one KCI, and is the only code that does: the engine runs it
on every KCI before anything is written, the wire models run it when a body is parsed, and the
charts, the statecharts, the reason-code matrix, the generated refusals and docs/contract.md all
read the tables instead of restating them. Adding a reason code means one member of
:class:`~kci_engine.core.codes.ReasonCode`, one entry here and the chart steps that send it; the
drawings, the matrix, the contract page and the refusal scenarios are regenerated from them.

What an order type adds (where its service characteristics live, what a completed order of that
type carries) is on its spec in ``engine/orders/``. Sources and their tags ([D] documented,
[I] inferred) are in docs/decisions.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, NamedTuple, Protocol

from ..errors import ContractViolation, MissingField
from .codes import OrderStatus, OrderType, ProblemCode, ReasonCode


class Need(StrEnum):
    """Whether a KCI of a reason code carries a field."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    FORBIDDEN = "forbidden"


class Situation(StrEnum):
    """The columns of the problem-code table: the situations a problem code is valid for."""

    CANCEL = "Cancel"
    DELAY = "Delay"
    INFORM = "Inform"
    REAPPOINT = "Reappoint"


class Request(StrEnum):
    """A tenant request whose result a KCI reports. The value is the prefix of the fields that
    reference it on the order (``serviceOrderAmendmentId``, ``serviceOrderAmendmentReference``)."""

    AMENDMENT = "serviceOrderAmendment"
    CANCELLATION = "serviceOrderCancellation"

    @property
    def id_field(self) -> str:
        return self.value + "Id"

    @property
    def reference_field(self) -> str:
        return self.value + "Reference"

    @property
    def label(self) -> str:
        return f"{self.name.lower()} ref"


class News(StrEnum):
    """What can make a KCI news to the tenant."""

    ORDER = "an order change"
    TEXT = "text"
    NOTES = "supplierNotes"


class OrderShape(Protocol):
    """What the contract needs to know of an order type (its spec in ``engine/orders/``)."""

    @property
    def order_type(self) -> OrderType: ...

    @property
    def completion(self) -> Carry | None:
        """What a completed order of this type carries (SERVICE_ID on a provide order)."""

    @property
    def characteristics_field(self) -> str | None:
        """The wire path of its service characteristics, ``None`` if it has none."""

    def characteristic(self, order: Mapping[str, Any], name: str) -> str | None:
        """The value of the service characteristic ``name`` on a wire-form order."""


@dataclass(frozen=True)
class Carry:
    """Order fields that must be present: every one of ``fields`` and ``characteristics``, or
    with ``any_of`` at least one of them. ``why`` completes "<field> is required: ..."."""

    fields: tuple[str, ...] = ()
    characteristics: tuple[str, ...] = ()
    any_of: bool = False
    why: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return self.fields + self.characteristics

    @property
    def label(self) -> str:
        """How charts and tables name it: ``committedDate, targetDate`` or ``a or b``."""
        return (" or " if self.any_of else ", ").join(self.names)

    def missing(self, order: Mapping[str, Any], shape: OrderShape | None = None) -> str | None:
        """The wire name of the first field missing from ``order`` (for ``any_of``: of the
        first, when all are missing), or ``None``. A missing characteristic is named by where
        the order type keeps them (``serviceOrderItem.serviceCharacteristics``)."""
        present = [order.get(name) is not None for name in self.fields]
        for name in self.characteristics:
            present.append(shape is not None and bool(shape.characteristic(order, name)))
        if self.any_of:
            absent = None if any(present) else self.names[0]
        else:
            absent = next((n for n, ok in zip(self.names, present, strict=True) if not ok), None)
        if absent in self.characteristics and shape is not None:
            return shape.characteristics_field or absent
        return absent


@dataclass(frozen=True)
class ReasonRule:
    """What the contract asks of every KCI of one reason code.

    Attributes:
        meaning: what the reason code tells the tenant.
        statuses: the order statuses its KCI may carry.
        problem_code: whether it carries a problemCode.
        situation: the problem-code column its problemCode must be valid for, if one applies.
        text: whether it carries text (what is needed, why it was refused).
        carries: order fields its KCI carries.
        gives: order fields the event itself must give (set, not merely keep): what is new.
        keeps: order fields it must leave as they were, with what to send instead (``hint``).
        resets: fields set once that it may nevertheless change (AMENDED: the tenant drives it).
        news: what makes it worth sending (at least one of them); empty: no such rule.
        answers: the tenant request whose result it reports, referenced on the order;
            ``always_answers``: it is never sent otherwise (a CANCELLED may be the supplier's own).
        not_on: order types it is never sent on.
        tenant_sees: the tenant-side KCI type the gateway turns it into.
        evidence: where the rules come from ([D] documented, [I] inferred; docs/decisions.md).
    """

    meaning: str
    statuses: frozenset[OrderStatus]
    problem_code: Need = Need.OPTIONAL
    situation: Situation | None = None
    text: Need = Need.OPTIONAL
    carries: tuple[Carry, ...] = ()
    gives: tuple[Carry, ...] = ()
    keeps: tuple[str, ...] = ()
    hint: str = ""
    resets: tuple[str, ...] = ()
    news: frozenset[News] = frozenset()
    answers: Request | None = None
    always_answers: bool = False
    not_on: frozenset[OrderType] = frozenset()
    tenant_sees: str = ""
    evidence: str = ""


@dataclass(frozen=True)
class StatusRule:
    """What an order in one status is, and what it carries whatever the KCI.

    Attributes:
        meaning: what the status says.
        set_by: ``gateway`` statuses are never on a KCI the supplier sends.
        carries: order fields an order in this status carries.
        completes: the order type's own completion rule applies (see the order-type specs).
    """

    meaning: str
    set_by: Literal["supplier", "gateway"] = "supplier"
    carries: tuple[Carry, ...] = ()
    completes: bool = False
    evidence: str = ""


# --- The tables ----------------------------------------------------------------------------------

S = OrderStatus
_C, _D, _I, _R = Situation.CANCEL, Situation.DELAY, Situation.INFORM, Situation.REAPPOINT
_TENANT_PLACED = frozenset({OrderType.PROVIDE, OrderType.CEASE, OrderType.MODIFY})
_UNSOLICITED = frozenset({OrderType.UNSOLICITED_CEASE})
_SUPPLIER_ACTIVE = frozenset({S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.PENDING})
#: Every status a supplier may put on a KCI of an order that is not final.
_NOT_FINAL = _SUPPLIER_ACTIVE | {S.PENDING_AMENDMENT, S.PENDING_CANCELLATION}
_APPOINTMENT = Carry(
    ("appointmentTimeslot", "appointmentSupplierReference"),
    any_of=True,
    why="a reappointment gives the new appointmentTimeslot and/or appointmentSupplierReference",
)

#: Every reason code a supplier sends, and what its KCI must be.
REASONS: Mapping[ReasonCode, ReasonRule] = {
    ReasonCode.CREATED: ReasonRule(
        "the supplier created an order the tenant did not place (an unsolicited cease)",
        frozenset({S.ACKNOWLEDGED, S.IN_PROGRESS}),
        problem_code=Need.FORBIDDEN,
        not_on=_TENANT_PLACED,
        tenant_sees="INFORMATIONAL / CREATED",
        evidence="[D] reason codes; ACKNOWLEDGED or IN_PROGRESS [I] ('COMMITTED' is no status)",
    ),
    ReasonCode.ACKNOWLEDGED: ReasonRule(
        "the supplier received the order and assigned its reference (KCI1)",
        frozenset({S.ACKNOWLEDGED}),
        problem_code=Need.FORBIDDEN,
        not_on=_UNSOLICITED,
        tenant_sees="INFORMATIONAL / ACKNOWLEDGED",
        evidence="[D] reason codes, order states",
    ),
    ReasonCode.COMMITTED: ReasonRule(
        "the supplier committed to fulfil the order (KCI2)",
        frozenset({S.IN_PROGRESS}),
        problem_code=Need.FORBIDDEN,
        tenant_sees="INFORMATIONAL / COMMITTED",
        evidence="[D] reason codes: committedDate and targetDate must be set",
    ),
    ReasonCode.UPDATE: ReasonRule(
        "a general update: order fields changed or a note attached",
        _NOT_FINAL,
        news=frozenset({News.ORDER, News.TEXT, News.NOTES}),
        tenant_sees="INFORMATIONAL / UPDATE",
        evidence="[D] tenant informational KCIs: 'fields may be updated or a note attached'",
    ),
    ReasonCode.ADDITIONAL: ReasonRule(
        "additional information for the tenant, such as the SERVICE_ID characteristic",
        _NOT_FINAL,
        news=frozenset({News.ORDER, News.NOTES}),
        tenant_sees="INFORMATIONAL / ADDITIONAL",
        evidence="[D] reason codes; news on the order or in supplierNotes [I]",
    ),
    ReasonCode.WARNING: ReasonRule(
        "a potential issue that is not (yet) causing a delay",
        _NOT_FINAL,
        problem_code=Need.REQUIRED,
        tenant_sees="INFORMATIONAL / WARNING",
        evidence="[D] reason codes: problemCode must",
    ),
    ReasonCode.DELAY: ReasonRule(
        "a problem is delaying the order",
        frozenset({S.HELD}),
        problem_code=Need.REQUIRED,
        situation=_D,
        tenant_sees="INFORMATIONAL / DELAY",
        evidence="[D] reason codes: problemCode must, status usually HELD",
    ),
    ReasonCode.RESUMED: ReasonRule(
        "the problem is resolved without impact on the target date",
        frozenset({S.IN_PROGRESS}),
        keeps=("targetDate",),
        hint="a moved targetDate is sent with UPDATE (or REAPPOINTED with a new appointment)",
        tenant_sees="INFORMATIONAL / RESUMED",
        evidence="[D] reason codes: status should be IN_PROGRESS; seed 001: without impact on "
        "target date",
    ),
    ReasonCode.INFORMATION_REQUIRED: ReasonRule(
        "the tenant must send an amendment with the information asked for",
        frozenset({S.PENDING}),
        problem_code=Need.REQUIRED,
        situation=_I,
        text=Need.REQUIRED,
        not_on=_UNSOLICITED,
        tenant_sees="ACTION_REQUIRED / INFORMATION_REQUIRED",
        evidence="[D] text must state what is needed; problemCode [D] guide (outside happy path)",
    ),
    ReasonCode.REAPPOINT: ReasonRule(
        "the tenant must reserve a new appointment and amend the order",
        frozenset({S.PENDING}),
        problem_code=Need.REQUIRED,
        situation=_R,
        not_on=_UNSOLICITED,
        tenant_sees="ACTION_REQUIRED / REAPPOINT",
        evidence="[D] reason codes: problemCode must",
    ),
    ReasonCode.REAPPOINTED: ReasonRule(
        "the supplier arranged a new appointment with the end customer",
        frozenset({S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.PENDING}),
        carries=(_APPOINTMENT,),
        gives=(
            _APPOINTMENT,
            Carry(("targetDate",), why="a reappointment gives the new targetDate"),
        ),
        not_on=_UNSOLICITED,
        tenant_sees="INFORMATIONAL / REAPPOINTED",
        evidence="[D] appointmentTimeslot / appointmentSupplierReference; targetDate [I]",
    ),
    ReasonCode.RESUBMIT: ReasonRule(
        "the tenant must correct and resubmit its request",
        frozenset({S.PENDING}),
        problem_code=Need.REQUIRED,
        text=Need.REQUIRED,
        not_on=_UNSOLICITED,
        tenant_sees="ACTION_REQUIRED / RESUBMIT",
        evidence="[I] the tenant cannot act without a reason",
    ),
    ReasonCode.AMENDED: ReasonRule(
        "the tenant's amendment was accepted and applied",
        frozenset({S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.PENDING, S.PENDING_AMENDMENT}),
        resets=("committedDate",),
        answers=Request.AMENDMENT,
        always_answers=True,
        not_on=_UNSOLICITED,
        tenant_sees="INFORMATIONAL / AMENDED",
        evidence="[D] the order references the amendment",
    ),
    ReasonCode.AMENDMENT_REJECTED: ReasonRule(
        "the tenant's amendment was rejected",
        frozenset({S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.PENDING, S.PENDING_AMENDMENT}),
        problem_code=Need.REQUIRED,
        text=Need.REQUIRED,
        answers=Request.AMENDMENT,
        always_answers=True,
        not_on=_UNSOLICITED,
        tenant_sees="ACTION_REQUIRED / RESUBMIT",
        evidence="[D] the order references the amendment; problemCode and text [I]",
    ),
    ReasonCode.CANCELLED: ReasonRule(
        "the order is cancelled, at the tenant's request or by the supplier",
        frozenset({S.CANCELLED}),
        problem_code=Need.REQUIRED,
        situation=_C,
        answers=Request.CANCELLATION,
        tenant_sees="INFORMATIONAL / CANCELLED (or TERMINATED, when the supplier's own)",
        evidence="[D] problemCode must; the cancellation ref must, when the tenant asked",
    ),
    ReasonCode.CANCELLATION_REJECTED: ReasonRule(
        "the tenant's cancellation request was rejected",
        _NOT_FINAL - {S.PENDING_CANCELLATION},
        problem_code=Need.REQUIRED,
        text=Need.REQUIRED,
        answers=Request.CANCELLATION,
        always_answers=True,
        tenant_sees="ACTION_REQUIRED / RESUBMIT",
        evidence="[D] the order references the cancellation; problemCode and text [I]",
    ),
    ReasonCode.ORDER_REJECTED: ReasonRule(
        "the order failed the supplier's validation before acknowledgement",
        frozenset({S.REJECTED}),
        problem_code=Need.REQUIRED,
        text=Need.REQUIRED,
        not_on=_UNSOLICITED,
        tenant_sees="INFORMATIONAL / TERMINATED (or ACTION_REQUIRED / RESUBMIT)",
        evidence="[D] text must give the reason; problemCode [D] guide",
    ),
    ReasonCode.COMPLETED: ReasonRule(
        "the order was fulfilled (KCI3)",
        frozenset({S.COMPLETED}),
        problem_code=Need.FORBIDDEN,
        tenant_sees="INFORMATIONAL / COMPLETED",
        evidence="[D] reason codes; SERVICE_ID on provide orders [D] seed 000",
    ),
}

#: Every order status, what it says and what an order in it carries.
STATUSES: Mapping[OrderStatus, StatusRule] = {
    S.RECEIVED_BY_GATEWAY: StatusRule("passed the gateway's validation", "gateway"),
    S.SENT_TO_SUPPLIER: StatusRule("sent to the supplier, not yet acknowledged", "gateway"),
    S.FAILED_TO_SEND: StatusRule("the gateway could not reach the supplier", "gateway"),
    S.ACKNOWLEDGED: StatusRule(
        "received and validated; the supplier's order reference assigned",
        carries=(
            Carry(
                ("supplierOrderReference",),
                why="the supplier assigns its order reference when it acknowledges the order "
                "(give it in order.supplierOrderReference)",
            ),
        ),
        evidence="[D] order states",
    ),
    S.IN_PROGRESS: StatusRule(
        "committed: delivery has started",
        carries=(
            Carry(
                ("supplierOrderReference",),
                why="the supplier assigns its order reference when it acknowledges the order "
                "(give it in order.supplierOrderReference)",
            ),
            Carry(
                ("committedDate", "targetDate"),
                why="a committed order carries committedDate and targetDate",
            ),
        ),
        evidence="[D] order states; COMMITTED: committedDate and targetDate must be set",
    ),
    S.REJECTED: StatusRule("failed business validation before acknowledgement (final)"),
    S.PENDING: StatusRule("waiting for the tenant to act (information, a new appointment)"),
    S.HELD: StatusRule("held by a supplier-side problem until it is resolved"),
    S.PENDING_AMENDMENT: StatusRule("an amendment request is being processed"),
    S.PENDING_CANCELLATION: StatusRule("a cancellation request is being processed"),
    S.CANCELLED: StatusRule("cancelled (final)"),
    S.COMPLETED: StatusRule("fulfilled (final)", completes=True),
    S.PARTIAL: StatusRule("the tenant-side outcome of a partly completed order", "gateway"),
    S.FAILED: StatusRule("the tenant-side outcome of a terminated order", "gateway"),
}

#: The situations each problem code is documented as valid for. ``None``: the public table did
#: not show that row, so the code is accepted in every situation.
PROBLEM_CODES: Mapping[ProblemCode, frozenset[Situation] | None] = {
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

#: problemCode OTHER says nothing by itself: it comes with text or supplierCodes [D].
OTHER_NEEDS = ("text", "supplierCodes")

#: Fields set once and never changed afterwards, except by a reason code that ``resets`` them,
#: with what to do instead.
SET_ONCE: Mapping[str, str] = {"committedDate": "move targetDate instead"}


def problem_code_allowed(code: ProblemCode, reason: ReasonCode) -> bool:
    """Whether the problem-code table allows ``code`` on a KCI of ``reason``: reason codes with
    no column, and codes whose row was not published, accept every code."""
    situation = REASONS[reason].situation
    if situation is None:
        return True
    allowed = PROBLEM_CODES[code]
    return allowed is None or situation in allowed


def example_problem_code(reason: ReasonCode) -> ProblemCode:
    """A problem code valid on ``reason`` that needs no text (for generated lifecycles)."""
    return next(
        code
        for code in sorted(ProblemCode)
        if code is not ProblemCode.OTHER and problem_code_allowed(code, reason)
    )


@dataclass(frozen=True)
class Demands:
    """What one transition's KCI (or, without ``reason``, its order) must carry, as charts,
    tables and the refusal generator read it."""

    reason: ReasonCode | None
    carries: tuple[Carry, ...] = ()

    @property
    def rule(self) -> ReasonRule | None:
        return REASONS[self.reason] if self.reason is not None else None

    def labels(self) -> list[str]:
        """Short labels: problemCode (with its column), text, the request reference, fields,
        new values, values kept, and what counts as news."""
        rule = self.rule
        labels: list[str] = []
        if rule is not None and rule.problem_code is Need.REQUIRED:
            labels.append(f"problemCode ({rule.situation})" if rule.situation else "problemCode")
        if rule is not None and rule.text is Need.REQUIRED:
            labels.append("text")
        if rule is not None and rule.always_answers and rule.answers is not None:
            labels.append(rule.answers.label)
        given = {carry.names for carry in rule.gives} if rule is not None else set()
        labels += [carry.label for carry in self.all_carries if carry.names not in given]
        if rule is not None:
            labels += [f"new {carry.label}" for carry in rule.gives]
            labels += [f"{name} unchanged" for name in rule.keeps]
            if rule.news:
                labels.append(" or ".join(news.value for news in _in_order(rule.news)))
        return list(dict.fromkeys(labels))

    @property
    def all_carries(self) -> tuple[Carry, ...]:
        """The reason code's carries, then the status's."""
        rule = self.rule
        own = rule.carries if rule is not None else ()
        return own + tuple(c for c in self.carries if c not in own)


def _in_order(news: frozenset[News]) -> list[News]:
    return [n for n in News if n in news]


def _status_rule(status: str | None) -> StatusRule | None:
    """The status's rule; ``None`` for the internal states of charts (``NEW``)."""
    try:
        return STATUSES[OrderStatus(status)] if status is not None else None
    except ValueError:
        return None


def status_demands(status: str | None, shape: OrderShape | None) -> tuple[Carry, ...]:
    """What an order in ``status`` carries (its completion rule included, for COMPLETED)."""
    rule = _status_rule(status)
    if rule is None:
        return ()
    completion = shape.completion if shape is not None and rule.completes else None
    return rule.carries + ((completion,) if completion is not None else ())


# --- The check -----------------------------------------------------------------------------------


class History(NamedTuple):
    """What a check needs beyond one body: the order before the event, and what the event gave.

    A named tuple (immutable, built on every KCI: a frozen dataclass costs several times more).

    Attributes:
        before: the order document before the event.
        given: the wire fields the event's order changes set (not removed).
        changed: whether the event changed the order at all.
    """

    before: Mapping[str, Any]
    given: frozenset[str] = frozenset()
    changed: bool = False


def check_order(status: str, order: Mapping[str, Any], shape: OrderShape | None = None) -> None:
    """Check what an order in ``status`` carries, whether or not a KCI goes with it (a
    synchronous 201 answer puts an order in ACKNOWLEDGED or IN_PROGRESS without one).

    Raises:
        MissingField: naming the first field missing.
    """
    if not _order_passes(_order_plan(status, shape), order, shape):
        _explain_order(status, order, shape)


def _explain_order(status: str, order: Mapping[str, Any], shape: OrderShape | None) -> None:
    """The status rules walked one by one: raises the first refusal, worded from the tables."""
    for carry in status_demands(status, shape):
        absent = carry.missing(order, shape)
        if absent is not None:
            raise MissingField(absent, carry.why or f"a {status} order carries {carry.label}")


def check_kci(
    shape: OrderShape,
    reason: ReasonCode,
    order: Mapping[str, Any],
    *,
    problem_code: ProblemCode | None = None,
    text: str | None = None,
    supplier_codes: Sequence[str] | None = None,
    supplier_notes: Sequence[Any] | None = None,
    answering: bool | None = None,
    history: History | None = None,
) -> None:
    """Check one KCI against every rule of the tables, in the order a supplier would fix them.

    Args:
        shape: the order type (its spec): what it may be sent, where its characteristics live,
            what a completed order of it carries.
        reason: the KCI's reason code.
        order: the order it carries, in wire form (camelCase keys; absent or ``None``: unset).
        problem_code, text, supplier_codes, supplier_notes: the KCI's envelope fields.
        answering: whether it answers the tenant request of its reason code (``None``: not
            known, as when a body is checked alone).
        history: the order before the event and what the event gave; without it the rules
            that compare with the past (``gives``, ``keeps``, ``news``, set-once) are skipped.

    Raises:
        MissingField: a field the contract requires is missing.
        ContractViolation: any other broken rule, stated.
    """
    status = order.get("status")
    try:
        plan = _PLANS.get((reason, status, shape), _UNCOMPILED)
        if plan is _UNCOMPILED:
            plan = _compile(reason, status, shape)
        passed = plan is not None and plan.passes(
            order, shape, problem_code, text, supplier_codes, supplier_notes, answering, history
        )
    except TypeError:  # a value that cannot be a key or a member (not from the engine)
        passed = False
    if passed:
        return
    _explain_kci(
        shape, reason, order, problem_code, text, supplier_codes, supplier_notes, answering, history
    )


def _explain_kci(
    shape: OrderShape,
    reason: ReasonCode,
    order: Mapping[str, Any],
    problem_code: ProblemCode | None,
    text: str | None,
    supplier_codes: Sequence[str] | None,
    supplier_notes: Sequence[Any] | None,
    answering: bool | None,
    history: History | None,
) -> None:
    """Every rule of the tables walked in the order a supplier would fix them: raises the first
    refusal, worded from the tables (the compiled plans only say whether a KCI passes)."""
    rule = REASONS[reason]
    _check_problem_code(reason, rule, problem_code, text, supplier_codes)
    if rule.text is Need.REQUIRED and not text:
        raise MissingField("text", f"a {reason} KCI must say in text what is needed or why")
    status = order.get("status")
    if status not in rule.statuses:
        allowed = ", ".join(sorted(rule.statuses))
        raise ContractViolation(f"status: a {reason} KCI carries status {allowed}, not {status}")
    if shape.order_type in rule.not_on:
        raise ContractViolation(f"reasonCode: {reason} is never sent on a {shape.order_type} order")
    for carry in rule.carries:
        absent = carry.missing(order, shape)
        if absent is not None:
            raise MissingField(absent, carry.why or f"a {reason} KCI carries {carry.label}")
    check_order(status, order, shape)
    _check_reference(reason, rule, order, answering)
    if history is not None:
        _check_history(reason, rule, order, history, text, supplier_notes)


def _check_problem_code(
    reason: ReasonCode,
    rule: ReasonRule,
    code: ProblemCode | None,
    text: str | None,
    supplier_codes: Sequence[str] | None,
) -> None:
    if code is None:
        if rule.problem_code is Need.REQUIRED:
            raise MissingField("problemCode", f"a {reason} KCI must carry a problemCode")
        return
    if rule.problem_code is Need.FORBIDDEN:
        raise ContractViolation(f"problemCode: a happy-path {reason} KCI carries no problemCode")
    if code is ProblemCode.OTHER and not text and not supplier_codes:
        raise MissingField("text", "problemCode OTHER must come with text or supplierCodes")
    if not problem_code_allowed(code, reason):
        raise ContractViolation(
            f"problemCode: {code} is not a {rule.situation} problem code, so it cannot go on a "
            f"{reason} KCI"
        )


def _check_reference(
    reason: ReasonCode, rule: ReasonRule, order: Mapping[str, Any], answering: bool | None
) -> None:
    request = rule.answers
    if request is None:
        return
    required = rule.always_answers or bool(answering)
    present = order.get(request.id_field) is not None or (
        order.get(request.reference_field) is not None
    )
    if required and not present:
        raise MissingField(
            request.id_field,
            f"{reason} must reference the {request.name.lower()} ({request.id_field} and/or "
            f"{request.reference_field})",
        )
    if present and answering is False:
        raise ContractViolation(
            f"{request.id_field}: this {reason} answers no {request.name.lower()} request"
        )


def _check_history(
    reason: ReasonCode,
    rule: ReasonRule,
    order: Mapping[str, Any],
    history: History,
    text: str | None,
    supplier_notes: Sequence[Any] | None,
) -> None:
    before = history.before
    for name, instead in SET_ONCE.items():
        was = before.get(name)
        if was is not None and order.get(name) != was and name not in rule.resets:
            raise ContractViolation(
                f"{name} is set once at COMMITTED ({was}) and never changes; {instead}"
            )
    for carry in rule.gives:
        absent = carry.missing(dict.fromkeys(history.given, True))
        if absent is not None:
            raise MissingField(absent, carry.why or f"a {reason} KCI gives the new {carry.label}")
    for name in rule.keeps:
        if order.get(name) != before.get(name):
            raise ContractViolation(
                f"{name}: a {reason} KCI leaves {name} as it was ({before.get(name)}); {rule.hint}"
            )
    if rule.news and not _is_news(rule.news, history, text, supplier_notes):
        offered = " or ".join(_NEWS_HOW[n] for n in _in_order(rule.news))
        raise ContractViolation(f"nothing new for the tenant: give {offered}")


_NEWS_HOW = {
    News.ORDER: "changes in order or service_characteristics",
    News.TEXT: "text",
    News.NOTES: "supplier_notes",
}


def _is_news(
    news: frozenset[News],
    history: History,
    text: str | None,
    supplier_notes: Sequence[Any] | None,
) -> bool:
    return (
        (News.ORDER in news and history.changed)
        or (News.TEXT in news and bool(text))
        or (News.NOTES in news and bool(supplier_notes))
    )


def reasons_sent_on(order_type: OrderType) -> Iterable[ReasonCode]:
    """The reason codes a KCI of ``order_type`` may have."""
    return (reason for reason, rule in REASONS.items() if order_type not in rule.not_on)


# --- The compiled check --------------------------------------------------------------------------
# check_kci runs on every KCI the engine sends, and walking the rules above for each one (lists
# of present fields, the status's rule looked up by enum, the history's rules) cost about a
# quarter of an in-memory apply. So each (reason code, status, order type) is compiled once, on
# first use, from the same tables into a _Plan: flat tuples of the fields that must be present,
# equal or given. A plan only says whether a KCI passes; when one does not, the rule walk runs
# and raises the refusal, so the tables stay the one source of the checks and of their wording.


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one (reason code, status, order type) asks of a KCI, flattened (see above)."""

    codes: frozenset[ProblemCode]  # the problem codes it may carry (empty: forbidden)
    code_required: bool
    text_required: bool
    fields: tuple[str, ...]  # order fields that must be set
    carries: tuple[Carry, ...]  # any-of groups and characteristics: Carry.missing decides
    answers: tuple[str, str] | None  # the answered request's id and reference fields
    always_answers: bool
    set_once: tuple[str, ...]
    gives: tuple[str, ...]  # fields the event must give
    gives_any: tuple[tuple[str, ...], ...]  # ... at least one of each
    keeps: tuple[str, ...]
    news: tuple[bool, bool, bool]  # an order change, text, supplierNotes; all False: no rule

    def passes(
        self,
        order: Mapping[str, Any],
        shape: OrderShape | None,
        code: ProblemCode | None,
        text: str | None,
        supplier_codes: Sequence[str] | None,
        supplier_notes: Sequence[Any] | None,
        answering: bool | None,
        history: History | None,
    ) -> bool:
        if code is None:
            if self.code_required:
                return False
        elif code not in self.codes or (
            code is ProblemCode.OTHER and not text and not supplier_codes
        ):
            return False
        if self.text_required and not text:
            return False
        if not _order_passes(self, order, shape):
            return False
        if self.answers is not None:
            id_field, reference_field = self.answers
            present = order.get(id_field) is not None or order.get(reference_field) is not None
            if (not present and (self.always_answers or answering)) or (
                present and answering is False
            ):
                return False
        if history is None:
            return True
        before, given = history.before, history.given
        for name in self.set_once:
            was = before.get(name)
            if was is not None and order.get(name) != was:
                return False
        for name in self.gives:
            if name not in given:
                return False
        for names in self.gives_any:
            if not any(name in given for name in names):
                return False
        for name in self.keeps:
            if order.get(name) != before.get(name):
                return False
        order_news, text_news, notes_news = self.news
        if order_news or text_news or notes_news:
            return (
                (order_news and history.changed)
                or (text_news and bool(text))
                or (notes_news and bool(supplier_notes))
            )
        return True


_UNCOMPILED: Any = object()
#: (reason code, status, order type) -> its plan, or ``None``: no KCI of it can pass.
_PLANS: dict[tuple[ReasonCode, Any, Any], _Plan | None] = {}
#: (status, order type) -> what an order in the status carries (only ``fields``, ``carries``).
_ORDER_PLANS: dict[tuple[Any, Any], _Plan] = {}


def _compile(reason: ReasonCode, status: Any, shape: OrderShape) -> _Plan | None:
    """The plan of a KCI of ``reason`` carrying ``status`` on an order of ``shape``, kept for
    the next; ``None`` (not kept: statuses are the sender's) when the status or order type is
    never allowed."""
    rule = REASONS[reason]
    if status not in rule.statuses:
        return None
    plan: _Plan | None = None
    if shape.order_type not in rule.not_on:
        order = _order_plan(status, shape)
        fields, carries = _flattened(rule.carries + order.carries)
        gives, gives_other = _flattened(rule.gives)
        if any(c.characteristics for c in gives_other):
            return None  # not compiled: a characteristic the event gives; walk the rules
        plan = _Plan(
            codes=frozenset(
                ()
                if rule.problem_code is Need.FORBIDDEN
                else (c for c in ProblemCode if problem_code_allowed(c, reason))
            ),
            code_required=rule.problem_code is Need.REQUIRED,
            text_required=rule.text is Need.REQUIRED,
            fields=tuple(dict.fromkeys(fields + order.fields)),
            carries=carries,
            answers=(
                None
                if rule.answers is None
                else (rule.answers.id_field, rule.answers.reference_field)
            ),
            always_answers=rule.always_answers,
            set_once=tuple(name for name in SET_ONCE if name not in rule.resets),
            gives=gives,
            gives_any=tuple(c.fields for c in gives_other),
            keeps=rule.keeps,
            news=(News.ORDER in rule.news, News.TEXT in rule.news, News.NOTES in rule.news),
        )
    _PLANS[(reason, status, shape)] = plan
    return plan


def _order_plan(status: Any, shape: OrderShape | None) -> _Plan:
    try:
        return _ORDER_PLANS[(status, shape)]
    except (KeyError, TypeError):  # TypeError: a shape or status that cannot be a key
        plan = _compile_order(status, shape)
    if _status_rule(status) is not None:  # kept only for the statuses there are
        _ORDER_PLANS[(status, shape)] = plan
    return plan


def _compile_order(status: Any, shape: OrderShape | None) -> _Plan:
    fields, carries = _flattened(status_demands(status, shape))
    no = (False, False, False)
    return _Plan(frozenset(), False, False, fields, carries, None, False, (), (), (), (), no)


def _flattened(carries: tuple[Carry, ...]) -> tuple[tuple[str, ...], tuple[Carry, ...]]:
    """Carries split into plain fields that must all be set, and the rest (any-of groups and
    characteristics), which :meth:`Carry.missing` decides."""
    fields: list[str] = []
    rest: list[Carry] = []
    for carry in carries:
        if carry.any_of or carry.characteristics:
            rest.append(carry)
        else:
            fields += carry.fields
    return tuple(fields), tuple(rest)


def _order_passes(plan: _Plan, order: Mapping[str, Any], shape: OrderShape | None) -> bool:
    get = order.get
    for name in plan.fields:
        if get(name) is None:
            return False
    return not plan.carries or all(carry.missing(order, shape) is None for carry in plan.carries)
