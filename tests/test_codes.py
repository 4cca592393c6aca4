"""The wire vocabulary and its rule tables, checked against the fact sheet's own lists."""

from __future__ import annotations

import pytest
from kci_engine.core.codes import (
    AMENDMENT_RESULTS,
    CANCELLATION_RESULTS,
    FINAL_STATUSES,
    PROBLEM_CODE_FORBIDDEN,
    PROBLEM_CODE_REQUIRED,
    PROBLEM_CODE_SITUATIONS,
    REASON_SITUATION,
    REASON_STATUSES,
    TEXT_REQUIRED,
    WAITING_STATUSES,
    CancellationReason,
    OrderStatus,
    ProblemCode,
    ReasonCode,
    Situation,
    UnsolicitedCeaseReason,
    problem_code_allowed,
)

S = OrderStatus
R = ReasonCode

#: The fact sheet's §3 list, spelled as on the wire.
REASON_CODES = [
    "CREATED",
    "ACKNOWLEDGED",
    "COMMITTED",
    "UPDATE",
    "ADDITIONAL",
    "WARNING",
    "DELAY",
    "RESUMED",
    "INFORMATION_REQUIRED",
    "REAPPOINT",
    "REAPPOINTED",
    "RESUBMIT",
    "AMENDED",
    "AMENDMENT_REJECTED",
    "CANCELLED",
    "CANCELLATION_REJECTED",
    "ORDER_REJECTED",
    "COMPLETED",
]

#: The fact sheet's §4 matrix, copied independently of engine/codes.py: Cancel, Delay, Inform,
#: Reappoint. ``None`` marks the rows whose matrix was not visible.
MATRIX: dict[str, str | None] = {
    "ACCESS_ISSUE": "CD-R",
    "ACTIVATION_FAILED": "CD-R",
    "ADDITIONAL_WORK": "CD-R",
    "APPOINTMENT_NOT_REQUIRED": "--I-",
    "CAPACITY_ISSUE": "C---",
    "COST_ISSUE": "C-I-",
    "CUSTOMER_CHANGED_MIND": "C--R",
    "FAULT_AT_NODE": "CDIR",
    "FAULT_AT_ONT": "CDIR",
    "FAULT_AT_POP": "CDIR",
    "INFORMATION_REQUIRED": "-DI-",
    "INSTALL_FAILED": "CD-R",
    "INVALID_REQUEST": "CD-R",
    "LINKED_ORDER_ISSUE": "CD-R",
    "NETWORK_ISSUE": "CDIR",
    "NETWORK_UNAVAILABLE": None,
    "NO_LONGER_REQUIRED": None,
    "OTHER": None,
    "PLANNING_ISSUE": None,
    "PROPERTY_UNOCCUPIED": None,
    "ROUTER_NOT_AVAILABLE": None,
    "SITE_UNSAFE": None,
    "SUPPLIER_FAULT": None,
    "SURVEY_REQUIRED": None,
    "TIMED_OUT": None,
    "UNABLE_TO_ATTEND": None,
    "UNKNOWN_FAULT": None,
    "WAYLEAVE_ISSUE": None,
}

#: The KCI reason code that stands for each column of the matrix.
COLUMN_REASON = {
    0: R.CANCELLED,
    1: R.DELAY,
    2: R.INFORMATION_REQUIRED,
    3: R.REAPPOINT,
}
UNKNOWN_MATRIX = [code for code, row in MATRIX.items() if row is None]
COLUMNLESS_REASONS = [r for r in ReasonCode if r not in REASON_SITUATION]


def test_there_are_exactly_the_18_documented_reason_codes() -> None:
    assert [r.value for r in ReasonCode] == REASON_CODES
    assert len(ReasonCode) == 18


def test_there_are_exactly_the_28_documented_problem_codes() -> None:
    assert sorted(p.value for p in ProblemCode) == sorted(MATRIX)
    assert len(ProblemCode) == 28


@pytest.mark.parametrize("enum", [ReasonCode, ProblemCode, OrderStatus, CancellationReason])
def test_enum_values_are_their_wire_spelling(enum: type[ReasonCode]) -> None:
    assert all(member.name == member.value for member in enum)


def test_cancelled_is_spelled_with_two_ls_everywhere() -> None:
    assert R.CANCELLED == "CANCELLED"
    assert S.CANCELLED == "CANCELLED"
    assert S.PENDING_CANCELLATION == "PENDING_CANCELLATION"


def test_every_problem_code_has_a_row_in_the_situation_table() -> None:
    assert set(PROBLEM_CODE_SITUATIONS) == set(ProblemCode)


def test_the_four_situations_are_the_fact_sheet_columns() -> None:
    assert [s.value for s in Situation] == ["Cancel", "Delay", "Inform", "Reappoint"]
    assert set(REASON_SITUATION.values()) == set(Situation)


@pytest.mark.parametrize("code", sorted(MATRIX))
def test_situation_table_matches_the_fact_sheet_row(code: str) -> None:
    row = MATRIX[code]
    expected = (
        None
        if row is None
        else frozenset(s for s, mark in zip(Situation, row, strict=True) if mark != "-")
    )
    assert PROBLEM_CODE_SITUATIONS[ProblemCode(code)] == expected


@pytest.mark.parametrize("column", sorted(COLUMN_REASON))
@pytest.mark.parametrize("code", sorted(c for c, row in MATRIX.items() if row is not None))
def test_problem_code_allowed_follows_each_column_of_the_matrix(code: str, column: int) -> None:
    row = MATRIX[code]
    assert row is not None
    assert problem_code_allowed(ProblemCode(code), COLUMN_REASON[column]) is (row[column] != "-")


@pytest.mark.parametrize("reason", list(REASON_SITUATION))
@pytest.mark.parametrize("code", UNKNOWN_MATRIX)
def test_codes_with_an_unpublished_matrix_are_allowed_in_every_situation(
    code: str, reason: ReasonCode
) -> None:
    assert problem_code_allowed(ProblemCode(code), reason) is True


@pytest.mark.parametrize("reason", COLUMNLESS_REASONS)
def test_reasons_without_a_column_accept_every_problem_code(reason: ReasonCode) -> None:
    assert all(problem_code_allowed(code, reason) for code in ProblemCode)


def test_reason_situation_maps_the_four_column_reasons() -> None:
    assert REASON_SITUATION == {
        R.CANCELLED: Situation.CANCEL,
        R.DELAY: Situation.DELAY,
        R.INFORMATION_REQUIRED: Situation.INFORM,
        R.REAPPOINT: Situation.REAPPOINT,
    }


@pytest.mark.parametrize(
    ("code", "reason", "allowed"),
    [
        (ProblemCode.CAPACITY_ISSUE, R.DELAY, False),
        (ProblemCode.CAPACITY_ISSUE, R.CANCELLED, True),
        (ProblemCode.APPOINTMENT_NOT_REQUIRED, R.REAPPOINT, False),
        (ProblemCode.INFORMATION_REQUIRED, R.CANCELLED, False),
        (ProblemCode.CUSTOMER_CHANGED_MIND, R.REAPPOINT, True),
        (ProblemCode.COST_ISSUE, R.INFORMATION_REQUIRED, True),
        (ProblemCode.ACCESS_ISSUE, R.INFORMATION_REQUIRED, False),
    ],
)
def test_problem_code_allowed_spot_checks(
    code: ProblemCode, reason: ReasonCode, allowed: bool
) -> None:
    assert problem_code_allowed(code, reason) is allowed


def test_problem_code_is_required_on_the_nine_off_happy_path_reasons() -> None:
    assert {
        R.WARNING,
        R.DELAY,
        R.REAPPOINT,
        R.CANCELLED,
        R.INFORMATION_REQUIRED,
        R.ORDER_REJECTED,
        R.AMENDMENT_REJECTED,
        R.CANCELLATION_REJECTED,
        R.RESUBMIT,
    } == PROBLEM_CODE_REQUIRED


def test_problem_code_is_forbidden_on_the_happy_path_reasons() -> None:
    assert {R.ACKNOWLEDGED, R.COMMITTED, R.COMPLETED, R.CREATED} == PROBLEM_CODE_FORBIDDEN
    assert not PROBLEM_CODE_FORBIDDEN & PROBLEM_CODE_REQUIRED


def test_text_is_required_where_the_kci_must_say_what_or_why() -> None:
    assert {
        R.INFORMATION_REQUIRED,
        R.ORDER_REJECTED,
        R.AMENDMENT_REJECTED,
        R.CANCELLATION_REJECTED,
        R.RESUBMIT,
    } == TEXT_REQUIRED
    assert TEXT_REQUIRED <= PROBLEM_CODE_REQUIRED


def test_reason_statuses_covers_every_reason_code_with_a_status() -> None:
    assert set(REASON_STATUSES) == set(ReasonCode)
    assert all(REASON_STATUSES[reason] for reason in ReasonCode)


@pytest.mark.parametrize(
    ("reason", "statuses"),
    [
        (R.CREATED, {S.ACKNOWLEDGED, S.IN_PROGRESS}),
        (R.ACKNOWLEDGED, {S.ACKNOWLEDGED}),
        (R.COMMITTED, {S.IN_PROGRESS}),
        (R.DELAY, {S.HELD}),
        (R.RESUMED, {S.ACKNOWLEDGED, S.IN_PROGRESS}),
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
    assert REASON_STATUSES[reason] == statuses


@pytest.mark.parametrize("reason", [R.UPDATE, R.ADDITIONAL, R.WARNING])
def test_status_preserving_reasons_go_with_every_non_final_supplier_status(
    reason: ReasonCode,
) -> None:
    assert REASON_STATUSES[reason] == {
        S.SENT_TO_SUPPLIER,
        S.ACKNOWLEDGED,
        S.IN_PROGRESS,
        S.HELD,
        S.PENDING,
        S.PENDING_AMENDMENT,
        S.PENDING_CANCELLATION,
    }


@pytest.mark.parametrize("reason", list(ReasonCode))
def test_only_terminal_reasons_carry_a_final_status(reason: ReasonCode) -> None:
    terminal = {R.ORDER_REJECTED: S.REJECTED, R.COMPLETED: S.COMPLETED, R.CANCELLED: S.CANCELLED}
    finals = REASON_STATUSES[reason] & FINAL_STATUSES
    assert finals == ({terminal[reason]} if reason in terminal else set())


@pytest.mark.parametrize("reason", [R.AMENDED, R.AMENDMENT_REJECTED])
def test_amendment_results_never_carry_sent_to_supplier(reason: ReasonCode) -> None:
    assert S.SENT_TO_SUPPLIER not in REASON_STATUSES[reason]
    assert S.PENDING_AMENDMENT in REASON_STATUSES[reason]


def test_final_and_waiting_statuses() -> None:
    assert {S.REJECTED, S.CANCELLED, S.COMPLETED} == FINAL_STATUSES
    assert {S.HELD, S.PENDING, S.PENDING_AMENDMENT, S.PENDING_CANCELLATION} == WAITING_STATUSES


def test_request_result_reason_groups() -> None:
    assert {R.AMENDED, R.AMENDMENT_REJECTED} == AMENDMENT_RESULTS
    assert {R.CANCELLED, R.CANCELLATION_REJECTED} == CANCELLATION_RESULTS


def test_unsolicited_cease_reasons_and_cancellation_reasons() -> None:
    assert [r.value for r in UnsolicitedCeaseReason] == [
        "CHANGE_OF_CP",
        "WORKING_LINE_TAKEOVER",
        "CP_REQUEST",
    ]
    assert len(CancellationReason) == 10
    assert "END_USER_NOT_MOVING" in {r.value for r in CancellationReason}
