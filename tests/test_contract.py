"""The contract tables, checked against the fact sheet, and check_kci's rules that need history."""

from __future__ import annotations

from typing import Any

import pytest
from kci_engine.core.codes import OrderStatus, OrderType, ProblemCode, ReasonCode
from kci_engine.core.contract import (
    PROBLEM_CODES,
    REASONS,
    SET_ONCE,
    STATUSES,
    Carry,
    Demands,
    History,
    Need,
    News,
    Request,
    Situation,
    check_kci,
    check_order,
    example_problem_code,
    problem_code_allowed,
    reasons_sent_on,
)
from kci_engine.errors import ContractViolation, MissingField
from kci_engine.orders import SPECS

from tests.fact_sheet import COLUMN_REASON, MATRIX

S = OrderStatus
R = ReasonCode
P, C, M, U = (SPECS[t] for t in OrderType)
UNKNOWN_MATRIX = [code for code, row in MATRIX.items() if row is None]
COLUMNLESS_REASONS = [r for r in ReasonCode if REASONS[r].situation is None]
DATES = {"committedDate": "2026-12-01T08:00:00.000Z", "targetDate": "2026-12-02T08:00:00.000Z"}
COMMITTED = {"id": 1, "tenant": "T", "supplierOrderReference": "S-1", **DATES}


# --- The tables, against the fact sheet ---------------------------------------------------------


def test_every_reason_code_and_status_has_an_entry() -> None:
    assert set(REASONS) == set(ReasonCode)
    assert set(STATUSES) == set(OrderStatus)
    assert set(PROBLEM_CODES) == set(ProblemCode)


def test_the_four_situations_are_the_fact_sheet_columns() -> None:
    assert [s.value for s in Situation] == ["Cancel", "Delay", "Inform", "Reappoint"]
    assert {REASONS[R(reason)].situation for reason in COLUMN_REASON.values()} == set(Situation)


@pytest.mark.parametrize("code", sorted(MATRIX))
def test_problem_code_table_matches_the_fact_sheet_row(code: str) -> None:
    row = MATRIX[code]
    expected = (
        None
        if row is None
        else frozenset(s for s, mark in zip(Situation, row, strict=True) if mark != "-")
    )
    assert PROBLEM_CODES[ProblemCode(code)] == expected


@pytest.mark.parametrize("column", sorted(COLUMN_REASON))
@pytest.mark.parametrize("code", sorted(c for c, row in MATRIX.items() if row is not None))
def test_problem_code_allowed_follows_each_column_of_the_matrix(code: str, column: int) -> None:
    row = MATRIX[code]
    assert row is not None
    allowed = problem_code_allowed(ProblemCode(code), R(COLUMN_REASON[column]))
    assert allowed is (row[column] != "-")


@pytest.mark.parametrize("reason", [R(r) for r in COLUMN_REASON.values()])
@pytest.mark.parametrize("code", UNKNOWN_MATRIX)
def test_codes_with_an_unpublished_matrix_are_allowed_in_every_situation(
    code: str, reason: ReasonCode
) -> None:
    assert problem_code_allowed(ProblemCode(code), reason) is True


@pytest.mark.parametrize("reason", COLUMNLESS_REASONS)
def test_reasons_without_a_column_accept_every_problem_code(reason: ReasonCode) -> None:
    assert all(problem_code_allowed(code, reason) for code in ProblemCode)


def test_problem_code_is_required_on_the_nine_off_happy_path_reasons() -> None:
    required = {r for r, rule in REASONS.items() if rule.problem_code is Need.REQUIRED}
    assert required == {
        R.WARNING,
        R.DELAY,
        R.REAPPOINT,
        R.CANCELLED,
        R.INFORMATION_REQUIRED,
        R.ORDER_REJECTED,
        R.AMENDMENT_REJECTED,
        R.CANCELLATION_REJECTED,
        R.RESUBMIT,
    }
    forbidden = {r for r, rule in REASONS.items() if rule.problem_code is Need.FORBIDDEN}
    assert forbidden == {R.ACKNOWLEDGED, R.COMMITTED, R.COMPLETED, R.CREATED}


def test_text_is_required_where_the_kci_must_say_what_or_why() -> None:
    text = {r for r, rule in REASONS.items() if rule.text is Need.REQUIRED}
    assert text == {
        R.INFORMATION_REQUIRED,
        R.ORDER_REJECTED,
        R.AMENDMENT_REJECTED,
        R.CANCELLATION_REJECTED,
        R.RESUBMIT,
    }


@pytest.mark.parametrize("reason", list(ReasonCode))
def test_no_reason_code_carries_a_status_only_the_gateway_sets(reason: ReasonCode) -> None:
    gateway = {s for s, rule in STATUSES.items() if rule.set_by == "gateway"}
    assert gateway == {
        S.RECEIVED_BY_GATEWAY,
        S.SENT_TO_SUPPLIER,
        S.FAILED_TO_SEND,
        S.PARTIAL,
        S.FAILED,
    }
    assert not REASONS[reason].statuses & gateway


@pytest.mark.parametrize(
    ("reason", "statuses"),
    [
        (R.CREATED, {S.ACKNOWLEDGED, S.IN_PROGRESS}),
        (R.ACKNOWLEDGED, {S.ACKNOWLEDGED}),
        (R.COMMITTED, {S.IN_PROGRESS}),
        (R.DELAY, {S.HELD}),
        (R.RESUMED, {S.IN_PROGRESS}),
        (R.INFORMATION_REQUIRED, {S.PENDING}),
        (R.REAPPOINT, {S.PENDING}),
        (R.RESUBMIT, {S.PENDING}),
        (R.CANCELLED, {S.CANCELLED}),
        (R.ORDER_REJECTED, {S.REJECTED}),
        (R.COMPLETED, {S.COMPLETED}),
    ],
)
def test_status_changing_reasons_carry_their_documented_status(
    reason: ReasonCode, statuses: set[OrderStatus]
) -> None:
    assert REASONS[reason].statuses == statuses


def test_request_results_answer_their_request() -> None:
    answers = {r: rule.answers for r, rule in REASONS.items() if rule.answers}
    assert answers == {
        R.AMENDED: Request.AMENDMENT,
        R.AMENDMENT_REJECTED: Request.AMENDMENT,
        R.CANCELLED: Request.CANCELLATION,
        R.CANCELLATION_REJECTED: Request.CANCELLATION,
    }
    assert not REASONS[R.CANCELLED].always_answers  # the supplier may cancel on its own


def test_reason_codes_never_sent_on_an_unsolicited_cease() -> None:
    never = set(ReasonCode) - set(reasons_sent_on(OrderType.UNSOLICITED_CEASE))
    assert never == {
        R.ACKNOWLEDGED,
        R.ORDER_REJECTED,
        R.INFORMATION_REQUIRED,
        R.REAPPOINT,
        R.REAPPOINTED,
        R.RESUBMIT,
        R.AMENDED,
        R.AMENDMENT_REJECTED,
    }
    assert set(ReasonCode) - set(reasons_sent_on(OrderType.PROVIDE)) == {R.CREATED}


@pytest.mark.parametrize("reason", [r for r in ReasonCode if REASONS[r].situation])
def test_the_example_problem_code_fits_its_column(reason: ReasonCode) -> None:
    code = example_problem_code(reason)
    assert code is not ProblemCode.OTHER
    assert problem_code_allowed(code, reason)


def test_carry_names_the_first_missing_field_and_any_of_needs_one() -> None:
    both = Carry(("committedDate", "targetDate"))
    assert both.missing({"committedDate": "x"}) == "targetDate"
    assert both.missing(DATES) is None
    either = Carry(("a", "b"), any_of=True)
    assert either.missing({}) == "a"
    assert either.missing({"b": 1}) is None
    assert either.label == "a or b"
    assert both.label == "committedDate, targetDate"
    service_id = Carry(characteristics=("SERVICE_ID",))
    assert service_id.missing({}, P) == "serviceOrderItem.serviceCharacteristics"
    assert service_id.missing({}) == "SERVICE_ID"


def test_demands_label_what_a_kci_must_carry() -> None:
    assert Demands(R.DELAY).labels() == ["problemCode (Delay)"]
    assert Demands(R.AMENDMENT_REJECTED).labels() == ["problemCode", "text", "amendment ref"]
    assert Demands(R.RESUMED).labels() == ["targetDate unchanged"]
    assert Demands(R.UPDATE).labels() == ["an order change or text or supplierNotes"]
    assert Demands(R.REAPPOINTED).labels() == [
        "new appointmentTimeslot or appointmentSupplierReference",
        "new targetDate",
    ]
    commit = Demands(R.COMMITTED, STATUSES[S.IN_PROGRESS].carries[1:])
    assert commit.labels() == ["committedDate, targetDate"]
    assert Demands(None, (Carry(("x",)),)).labels() == ["x"]


# --- check_order and check_kci ------------------------------------------------------------------


def test_an_order_in_a_status_carries_what_the_status_says() -> None:
    check_order(S.ACKNOWLEDGED, {"supplierOrderReference": "S"})
    with pytest.raises(MissingField) as missing:
        check_order(S.ACKNOWLEDGED, {"id": 1})
    assert missing.value.field == "supplierOrderReference"
    with pytest.raises(MissingField) as missing:
        check_order(S.IN_PROGRESS, {"supplierOrderReference": "S", "committedDate": "x"})
    assert missing.value.field == "targetDate"
    check_order("NEW", {})  # a chart's internal state carries nothing
    with pytest.raises(MissingField) as missing:
        check_order(S.COMPLETED, {}, P)
    assert missing.value.field == "serviceOrderItem.serviceCharacteristics"
    check_order(S.COMPLETED, {}, U)


def kci(
    reason: ReasonCode,
    order: dict[str, Any],
    *,
    shape: Any = P,
    history: History | None = None,
    **envelope: Any,
) -> None:
    check_kci(shape, reason, order, history=history, **envelope)


def test_a_resumed_kci_keeps_the_target_date() -> None:
    before = {**COMMITTED, "status": S.HELD}
    kci(R.RESUMED, {**COMMITTED, "status": S.IN_PROGRESS}, history=History(before))
    moved = {**COMMITTED, "status": S.IN_PROGRESS, "targetDate": "2026-12-09T08:00:00.000Z"}
    with pytest.raises(ContractViolation) as refused:
        kci(R.RESUMED, moved, history=History(before, frozenset({"targetDate"}), True))
    assert refused.value.rule.startswith("targetDate: a RESUMED KCI leaves targetDate as it was")
    assert "UPDATE" in refused.value.rule
    kci(R.RESUMED, moved)  # without history the rule cannot be checked on one body


def test_committed_date_is_set_once_except_by_an_amendment() -> None:
    before = {**COMMITTED, "status": S.IN_PROGRESS}
    moved = {**before, "committedDate": "2026-12-05T08:00:00.000Z"}
    history = History(before, frozenset({"committedDate"}), True)
    with pytest.raises(ContractViolation) as refused:
        kci(R.UPDATE, moved, history=history)
    assert "committedDate is set once" in refused.value.rule
    assert SET_ONCE["committedDate"] in refused.value.rule
    kci(R.AMENDED, {**moved, "serviceOrderAmendmentId": 5}, history=history, answering=True)


def test_a_reappointment_gives_the_new_appointment_and_target_date() -> None:
    before = {**COMMITTED, "status": S.IN_PROGRESS, "appointmentSupplierReference": "A-1"}
    with pytest.raises(MissingField) as missing:
        kci(R.REAPPOINTED, before, history=History(before, frozenset({"targetDate"}), True))
    assert missing.value.field == "appointmentTimeslot"
    given = frozenset({"appointmentSupplierReference"})
    with pytest.raises(MissingField) as missing:
        kci(R.REAPPOINTED, before, history=History(before, given, True))
    assert missing.value.field == "targetDate"
    kci(R.REAPPOINTED, before, history=History(before, given | {"targetDate"}, True))


@pytest.mark.parametrize(
    ("reason", "envelope", "changed", "news"),
    [
        (R.UPDATE, {}, True, True),
        (R.UPDATE, {"text": "Engineer booked"}, False, True),
        (R.UPDATE, {"supplier_notes": [{"note": "n"}]}, False, True),
        (R.UPDATE, {}, False, False),
        (R.ADDITIONAL, {"text": "Only words"}, False, False),
        (R.ADDITIONAL, {"supplier_notes": [{"note": "n"}]}, False, True),
        (R.ADDITIONAL, {}, True, True),
    ],
)
def test_an_update_or_additional_kci_brings_news(
    reason: ReasonCode, envelope: dict[str, Any], changed: bool, news: bool
) -> None:
    order = {**COMMITTED, "status": S.IN_PROGRESS}
    history = History(order, frozenset(), changed)
    if news:
        kci(reason, order, history=history, **envelope)
        return
    with pytest.raises(ContractViolation) as refused:
        kci(reason, order, history=history, **envelope)
    assert refused.value.rule.startswith("nothing new for the tenant: give ")
    assert ("text" in refused.value.rule) is (News.TEXT in REASONS[reason].news)


def test_a_request_reference_goes_only_on_the_kci_that_answers_it() -> None:
    order = {**COMMITTED, "status": S.CANCELLED, "serviceOrderCancellationId": 9}
    kci(R.CANCELLED, order, problem_code=ProblemCode.CAPACITY_ISSUE, answering=True)
    with pytest.raises(ContractViolation) as refused:
        kci(R.CANCELLED, order, problem_code=ProblemCode.CAPACITY_ISSUE, answering=False)
    assert refused.value.rule.startswith("serviceOrderCancellationId: this CANCELLED answers no")
    bare = {**COMMITTED, "status": S.CANCELLED}
    kci(R.CANCELLED, bare, problem_code=ProblemCode.CAPACITY_ISSUE, answering=False)
    with pytest.raises(MissingField):
        kci(R.CANCELLED, bare, problem_code=ProblemCode.CAPACITY_ISSUE, answering=True)


def test_a_reason_code_never_sent_on_the_order_type_is_refused() -> None:
    with pytest.raises(ContractViolation) as refused:
        kci(R.CREATED, {**COMMITTED, "status": S.ACKNOWLEDGED}, shape=M)
    assert refused.value.rule == "reasonCode: CREATED is never sent on a modify order"


# --- the compiled check agrees with the rule walk -------------------------------------------------

_FIELD_POOL = sorted(
    {n for rule in REASONS.values() for carry in rule.carries + rule.gives for n in carry.names}
    | {name for rule in STATUSES.values() for carry in rule.carries for name in carry.names}
    | {name for rule in REASONS.values() for name in rule.keeps}
    | {"committedDate", "serviceOrderAmendmentId", "serviceOrderCancellationReference"}
)


def _random_case(rng: Any) -> tuple[Any, ...]:
    shape = rng.choice(list(SPECS.values()))
    reason = rng.choice(list(ReasonCode))
    rule = REASONS[reason]
    statuses = sorted(rule.statuses) if rng.random() < 0.85 else sorted(S)
    order: dict[str, Any] = {"status": rng.choice(statuses)}
    for name in _FIELD_POOL:
        if rng.random() < 0.7:
            order[name] = rng.choice(["a", "b"])
    if rng.random() < 0.5:
        order.update(provide_with_service_id())
    codes = [None, ProblemCode.OTHER, rng.choice(list(ProblemCode))]
    before = {k: v for k, v in order.items() if rng.random() < 0.8}
    given = frozenset(name for name in _FIELD_POOL if rng.random() < 0.3)
    history = rng.choice([None, History(before, given, rng.random() < 0.5)])
    return (
        shape,
        reason,
        order,
        rng.choice(codes),
        rng.choice([None, "", "why"]),
        rng.choice([None, ["X1"]]),
        rng.choice([None, [{"note": "n"}]]),
        rng.choice([None, True, False]),
        history,
    )


def provide_with_service_id() -> dict[str, Any]:
    item = {"serviceCharacteristics": [{"name": "SERVICE_ID", "value": "SVC-1"}]}
    return {"serviceOrderItem": item}


def test_the_compiled_check_passes_exactly_what_the_rule_walk_passes() -> None:
    """check_kci's compiled plans (the fast path) agree with walking the tables (which words
    every refusal) on 20,000 generated KCIs: same verdict, and the same refusal."""
    import random

    from kci_engine.core import contract

    rng = random.Random(13)
    verdicts = {True: 0, False: 0}
    for _ in range(20_000):
        case = _random_case(rng)
        shape, reason, order, code, text, codes, notes, answering, history = case
        try:
            contract._explain_kci(*case)
            walked: Exception | None = None
        except (ContractViolation, MissingField) as exc:
            walked = exc
        plan = contract._compile(reason, order["status"], shape)
        compiled = plan is not None and plan.passes(
            order, shape, code, text, codes, notes, answering, history
        )
        assert compiled is (walked is None), case
        verdicts[compiled] += 1
        try:
            check_kci(
                shape,
                reason,
                order,
                problem_code=code,
                text=text,
                supplier_codes=codes,
                supplier_notes=notes,
                answering=answering,
                history=history,
            )
            checked: Exception | None = None
        except (ContractViolation, MissingField) as exc:
            checked = exc
        assert repr(checked) == repr(walked)
        assert str(checked) == str(walked)
    assert min(verdicts.values()) > 1_000  # both verdicts well exercised
