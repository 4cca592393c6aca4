"""Steps every order type has: progress while under way, commitment, cancellation, completion.

Each order-type module composes these with its own steps; the arguments are the statuses the
type has, so a tenant-placed order and an unsolicited cease share the steps without sharing
statuses they do not have.
"""

from __future__ import annotations

from ..core._rules import ANSWERS_CANCELLATION, NAMES_NEW_CANCELLATION, TEXT_GIVEN
from ..core.chart import RETURN, State, Step, was
from ..core.codes import OrderStatus as S
from ..core.codes import ReasonCode as R
from ..core.contract import STATUSES
from ..core.events import Event as E


def supplier_statuses(states: tuple[State, ...]) -> tuple[str, ...]:
    """The statuses of ``states`` a supplier's KCI may carry while the order goes on: not final,
    not set by the gateway."""
    return tuple(
        s.name
        for s in states
        if not s.final and s.name in STATUSES and STATUSES[S(s.name)].set_by == "supplier"
    )


def progress_steps(under_way: tuple[str, ...], ongoing: tuple[str, ...]) -> tuple[Step, ...]:
    """Delay from ``under_way`` and resume; updates, additional information and warnings, which
    leave the status as it is, from every status in ``ongoing``.

    A delay that began before the order was committed ends with an UPDATE back to ACKNOWLEDGED
    (a RESUMED KCI carries IN_PROGRESS), or with ``commit`` (see :func:`commit_steps`).
    """
    return (
        Step(E.DELAY, under_way, S.HELD, R.DELAY),
        Step(E.RESUME, (S.HELD,), RETURN, R.RESUMED),
        Step(E.RESUME, (S.HELD,), S.ACKNOWLEDGED, R.UPDATE, when=was(S.ACKNOWLEDGED)),
        Step(E.UPDATE, ongoing, None, R.UPDATE),
        Step(E.ADD_INFORMATION, ongoing, None, R.ADDITIONAL),
        Step(E.WARN, ongoing, None, R.WARNING),
    )


def commit_steps() -> tuple[Step, ...]:
    """The commitment: from ACKNOWLEDGED, or straight out of a delay that began before it."""
    return (
        Step(E.COMMIT, (S.ACKNOWLEDGED,), S.IN_PROGRESS, R.COMMITTED),
        Step(E.COMMIT, (S.HELD,), S.IN_PROGRESS, R.COMMITTED, when=was(S.ACKNOWLEDGED)),
    )


def cancellation_steps(cancellable: tuple[str, ...]) -> tuple[Step, ...]:
    """A tenant's cancellation request (received, then accepted or rejected; or answered 201
    and cancelled at once) and the supplier's own cancellation, from every status in
    ``cancellable``."""
    return (
        Step(
            E.CANCELLATION_RECEIVED,
            cancellable,
            S.PENDING_CANCELLATION,
            None,
            (NAMES_NEW_CANCELLATION,),
        ),
        Step(
            E.ACCEPT_CANCELLATION,
            (S.PENDING_CANCELLATION,),
            S.CANCELLED,
            R.CANCELLED,
            (ANSWERS_CANCELLATION,),
        ),
        Step(
            E.REJECT_CANCELLATION,
            (S.PENDING_CANCELLATION,),
            RETURN,
            R.CANCELLATION_REJECTED,
            (ANSWERS_CANCELLATION,),
        ),
        # A 201 answer to the tenant's request: cancelled at once, no KCI (decisions L23).
        Step(E.CANCELLED_IN_201, cancellable, S.CANCELLED, None, (NAMES_NEW_CANCELLATION,)),
        Step(E.CANCEL, cancellable, S.CANCELLED, R.CANCELLED, (TEXT_GIVEN,)),
    )


COMPLETE = Step(E.COMPLETE, (S.IN_PROGRESS,), S.COMPLETED, R.COMPLETED)
