"""The wire vocabulary, checked against the fact sheet's own lists."""

from __future__ import annotations

import pytest
from kci_engine.core.codes import (
    CancellationReason,
    OrderStatus,
    ProblemCode,
    ReasonCode,
    UnsolicitedCeaseReason,
)

from tests.fact_sheet import MATRIX, REASON_CODES

S = OrderStatus
R = ReasonCode


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


def test_unsolicited_cease_reasons_and_cancellation_reasons() -> None:
    assert [r.value for r in UnsolicitedCeaseReason] == [
        "CHANGE_OF_CP",
        "WORKING_LINE_TAKEOVER",
        "CP_REQUEST",
    ]
    assert len(CancellationReason) == 10
    assert "END_USER_NOT_MOVING" in {r.value for r in CancellationReason}
