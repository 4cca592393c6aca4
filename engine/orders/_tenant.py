"""What provide, modify and cease orders share: the tenant-placed lifecycle.

The table is the baseline of ``lifecycles.md``; each order-type module picks from it (cease
orders have no appointment steps) and adds its own order model and completion rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core._rules import ANSWERS_AMENDMENT, ANSWERS_CANCELLATION, NAMES_NEW_AMENDMENT
from ..core.chart import RETURN, RETURN_RESOLVED, State, Step, When, final, waiting, was
from ..core.codes import CancellationReason as C
from ..core.codes import OrderStatus as S
from ..core.codes import ReasonCode as R
from ..core.events import Event as E
from ._shared import COMPLETE, cancellation_steps, commit_steps, progress_steps, supplier_statuses

STATES: tuple[State, ...] = (
    State(S.SENT_TO_SUPPLIER),
    State(S.ACKNOWLEDGED),
    State(S.IN_PROGRESS),
    waiting(S.HELD),
    waiting(S.PENDING, resolvable=True),
    waiting(S.PENDING_AMENDMENT),
    waiting(S.PENDING_CANCELLATION),
    final(S.REJECTED),
    final(S.CANCELLED),
    final(S.COMPLETED),
)
UNDER_WAY = (S.ACKNOWLEDGED, S.IN_PROGRESS)
ONGOING = supplier_statuses(STATES)
AMENDABLE = (S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING)
AMENDED_AT_ONCE = (S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING_AMENDMENT)
CANCELLABLE = tuple(s.name for s in STATES if not s.final and s.name != S.PENDING_CANCELLATION)
CANCELLATION_REASONS = frozenset(
    {C.CUSTOMER_CHANGED_MIND, C.INSTALL_FAILED, C.NETWORK_ISSUE, C.NO_LONGER_REQUIRED, C.OTHER}
)

MORE_AMENDMENTS = When(
    "other amendments in flight", lambda firing: len(firing.record.amendments) > 1
)

COMMON: tuple[Step, ...] = (
    *progress_steps(UNDER_WAY, ONGOING),
    *cancellation_steps(CANCELLABLE),
    # Rejecting a cancellation that arrived before acknowledgement acknowledges the order: its
    # KCI cannot carry SENT_TO_SUPPLIER, a status only the gateway sets (decisions L19).
    Step(
        E.REJECT_CANCELLATION,
        (S.PENDING_CANCELLATION,),
        S.ACKNOWLEDGED,
        R.CANCELLATION_REJECTED,
        (ANSWERS_CANCELLATION,),
        was(S.SENT_TO_SUPPLIER),
    ),
    COMPLETE,
    Step(E.ACKNOWLEDGE, (S.SENT_TO_SUPPLIER,), S.ACKNOWLEDGED, R.ACKNOWLEDGED),
    Step(E.ACKNOWLEDGED_IN_201, (S.SENT_TO_SUPPLIER,), S.ACKNOWLEDGED, None, told_by_gateway=True),
    Step(E.COMMITTED_IN_201, (S.SENT_TO_SUPPLIER,), S.IN_PROGRESS, None, told_by_gateway=True),
    Step(E.REJECT, (S.SENT_TO_SUPPLIER,), S.REJECTED, R.ORDER_REJECTED),
    *commit_steps(),
    Step(E.REQUEST_INFORMATION, (*UNDER_WAY, S.HELD), S.PENDING, R.INFORMATION_REQUIRED),
    Step(E.REQUEST_RESUBMISSION, UNDER_WAY, S.PENDING, R.RESUBMIT),
    Step(E.REQUEST_RESUBMISSION, (S.PENDING,), None, R.RESUBMIT),
    Step(E.AMENDMENT_RECEIVED, AMENDABLE, S.PENDING_AMENDMENT, None, (NAMES_NEW_AMENDMENT,)),
    Step(E.AMENDMENT_RECEIVED, (S.PENDING_AMENDMENT,), None, None, (NAMES_NEW_AMENDMENT,)),
    # A 201 answer to an amendment: applied at once, no KCI (the gateway tells the tenant). Not
    # from PENDING: there the amendment answers what the order waits for, and the status it goes
    # back to must reach the tenant in an AMENDED KCI (decisions L22).
    Step(E.AMENDED_IN_201, AMENDED_AT_ONCE, None, None, told_by_gateway=True),
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
    Step(E.REQUEST_REAPPOINTMENT, (*UNDER_WAY, S.HELD), S.PENDING, R.REAPPOINT),
    Step(E.REAPPOINTED, UNDER_WAY, None, R.REAPPOINTED),
    Step(E.REAPPOINTED, (S.HELD, S.PENDING), RETURN, R.REAPPOINTED),
)


def tenant_key(document: Mapping[str, Any]) -> str | None:
    """A tenant-placed order's key: ``TENANT:id`` (gateway ids are unique per tenant), else its
    supplierOrderReference."""
    if document.get("id") is not None and document.get("tenant"):
        return f"{document['tenant']}:{document['id']}"
    reference = document.get("supplierOrderReference")
    return str(reference) if reference else None
