"""Steps every order type has: progress while active, and cancellation.

Each order-type module composes these with its own steps; the arguments are the statuses the
type has, so a tenant-placed order and an unsolicited cease share the rules without sharing
statuses they do not have.
"""

from __future__ import annotations

from ..core._machine import RETURN, Step
from ..core._rules import (
    ANSWERS_CANCELLATION,
    NAMES_NEW_CANCELLATION,
    ORDER_CHANGED,
    TEXT_GIVEN,
)
from ..core.codes import OrderStatus as S
from ..core.codes import ReasonCode as R
from ..core.events import Event as E


def progress_steps(active: tuple[str, ...], non_final: tuple[str, ...]) -> tuple[Step, ...]:
    """Delay and resume from ``active``; updates, additional information and warnings, which
    leave the status as it is, from every status in ``non_final``."""
    return (
        Step(E.DELAY, active, S.HELD, R.DELAY),
        Step(E.RESUME, (S.HELD,), RETURN, R.RESUMED),
        Step(E.UPDATE, non_final, None, R.UPDATE, (ORDER_CHANGED,)),
        Step(E.ADD_INFORMATION, non_final, None, R.ADDITIONAL, (ORDER_CHANGED,)),
        Step(E.WARN, non_final, None, R.WARNING),
    )


def cancellation_steps(cancellable: tuple[str, ...]) -> tuple[Step, ...]:
    """A tenant's cancellation request (received, accepted or rejected) and the supplier's own
    cancellation, from every status in ``cancellable``."""
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
        Step(E.CANCEL, cancellable, S.CANCELLED, R.CANCELLED, (TEXT_GIVEN,)),
    )


COMPLETE = Step(E.COMPLETE, (S.IN_PROGRESS,), S.COMPLETED, R.COMPLETED)
