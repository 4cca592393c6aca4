"""The steps that provide, modify and cease orders share: the tenant-placed lifecycle.

The table is the baseline of ``lifecycles.md``; each order-type module picks from it (cease
orders have no appointment steps) and names its own completion rule.
"""

from __future__ import annotations

from ..core._machine import RETURN, RETURN_RESOLVED, Firing, Step, When
from ..core._rules import (
    ANSWERS_AMENDMENT,
    BEFORE_FIRST_KCI,
    COMMITTED_DATES,
    NAMES_NEW_AMENDMENT,
    NEW_APPOINTMENT,
    SUPPLIER_REFERENCE,
)
from ..core.codes import OrderStatus as S
from ..core.codes import ReasonCode as R
from ..core.events import Event as E
from ._shared import COMPLETE, cancellation_steps, progress_steps

STATES: tuple[str, ...] = (
    S.SENT_TO_SUPPLIER,
    S.ACKNOWLEDGED,
    S.IN_PROGRESS,
    S.HELD,
    S.PENDING,
    S.PENDING_AMENDMENT,
    S.PENDING_CANCELLATION,
    S.REJECTED,
    S.CANCELLED,
    S.COMPLETED,
)
NON_FINAL: tuple[str, ...] = STATES[:7]
ACTIVE = (S.ACKNOWLEDGED, S.IN_PROGRESS)
AMENDABLE = (S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING)
CANCELLABLE = tuple(s for s in NON_FINAL if s != S.PENDING_CANCELLATION)


def _more_amendments(firing: Firing) -> bool:
    return len(firing.record.amendments) > 1


MORE_AMENDMENTS = When("other amendments in flight", _more_amendments)

COMMON: tuple[Step, ...] = (
    *progress_steps(ACTIVE, NON_FINAL),
    *cancellation_steps(CANCELLABLE),
    COMPLETE,
    Step(
        E.ACKNOWLEDGE, (S.SENT_TO_SUPPLIER,), S.ACKNOWLEDGED, R.ACKNOWLEDGED, (SUPPLIER_REFERENCE,)
    ),
    Step(
        E.ACKNOWLEDGED_IN_201,
        (S.SENT_TO_SUPPLIER,),
        S.ACKNOWLEDGED,
        None,
        (SUPPLIER_REFERENCE, BEFORE_FIRST_KCI),
    ),
    Step(
        E.COMMITTED_IN_201,
        (S.SENT_TO_SUPPLIER,),
        S.IN_PROGRESS,
        None,
        (SUPPLIER_REFERENCE, COMMITTED_DATES, BEFORE_FIRST_KCI),
    ),
    Step(E.REJECT, (S.SENT_TO_SUPPLIER,), S.REJECTED, R.ORDER_REJECTED),
    Step(E.COMMIT, (S.ACKNOWLEDGED,), S.IN_PROGRESS, R.COMMITTED, (COMMITTED_DATES,)),
    Step(E.REQUEST_INFORMATION, (*ACTIVE, S.HELD), S.PENDING, R.INFORMATION_REQUIRED),
    Step(E.REQUEST_RESUBMISSION, ACTIVE, S.PENDING, R.RESUBMIT),
    Step(E.REQUEST_RESUBMISSION, (S.PENDING,), None, R.RESUBMIT),
    Step(E.AMENDMENT_RECEIVED, AMENDABLE, S.PENDING_AMENDMENT, None, (NAMES_NEW_AMENDMENT,)),
    Step(E.AMENDMENT_RECEIVED, (S.PENDING_AMENDMENT,), None, None, (NAMES_NEW_AMENDMENT,)),
    Step(
        E.ACCEPT_AMENDMENT,
        (S.PENDING_AMENDMENT,),
        None,
        R.AMENDED,
        (ANSWERS_AMENDMENT,),
        MORE_AMENDMENTS,
    ),
    Step(
        E.ACCEPT_AMENDMENT, (S.PENDING_AMENDMENT,), RETURN_RESOLVED, R.AMENDED, (ANSWERS_AMENDMENT,)
    ),
    Step(
        E.REJECT_AMENDMENT,
        (S.PENDING_AMENDMENT,),
        None,
        R.AMENDMENT_REJECTED,
        (ANSWERS_AMENDMENT,),
        MORE_AMENDMENTS,
    ),
    Step(
        E.REJECT_AMENDMENT,
        (S.PENDING_AMENDMENT,),
        RETURN,
        R.AMENDMENT_REJECTED,
        (ANSWERS_AMENDMENT,),
    ),
)

APPOINTMENTS: tuple[Step, ...] = (
    Step(E.REQUEST_REAPPOINTMENT, (*ACTIVE, S.HELD), S.PENDING, R.REAPPOINT),
    Step(E.REAPPOINTED, ACTIVE, None, R.REAPPOINTED, (NEW_APPOINTMENT,)),
    Step(E.REAPPOINTED, (S.HELD, S.PENDING), RETURN, R.REAPPOINTED, (NEW_APPOINTMENT,)),
)
