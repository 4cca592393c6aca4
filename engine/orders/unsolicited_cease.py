"""Unsolicited ceases: created by the supplier (the losing side's network), never amended.

The order starts in the internal state ``NEW`` and is created as ACKNOWLEDGED or IN_PROGRESS,
whichever status the order document asks for, with a CREATED KCI. The tenant may ask to cancel
it; the supplier may also withdraw it (see docs/decisions.md).
"""

from __future__ import annotations

from ..core._machine import NEW, Chart, Firing, Step, When
from ..core._rules import (
    COMMITTED_DATES,
)
from ..core.codes import OrderStatus as S
from ..core.codes import OrderType
from ..core.codes import ReasonCode as R
from ..core.events import Event as E
from ._shared import COMPLETE, cancellation_steps, progress_steps

STATES: tuple[str, ...] = (
    NEW,
    S.ACKNOWLEDGED,
    S.IN_PROGRESS,
    S.HELD,
    S.PENDING_CANCELLATION,
    S.CANCELLED,
    S.COMPLETED,
)
ACTIVE = (S.ACKNOWLEDGED, S.IN_PROGRESS)
NON_FINAL = (*ACTIVE, S.HELD, S.PENDING_CANCELLATION)
CANCELLABLE = (*ACTIVE, S.HELD)


def _asks_for(status: S) -> When:
    def test(firing: Firing) -> bool:
        return bool(firing.record.document.get("status") == status)

    return When(f"order.status = {status}", test)


CHART = Chart(
    order_type=OrderType.UNSOLICITED_CEASE,
    initial=NEW,
    states=STATES,
    steps=(
        Step(E.CREATE, (NEW,), S.ACKNOWLEDGED, R.CREATED, when=_asks_for(S.ACKNOWLEDGED)),
        Step(
            E.CREATE, (NEW,), S.IN_PROGRESS, R.CREATED, (COMMITTED_DATES,), _asks_for(S.IN_PROGRESS)
        ),
        Step(E.COMMIT, (S.ACKNOWLEDGED,), S.IN_PROGRESS, R.COMMITTED, (COMMITTED_DATES,)),
        *progress_steps(ACTIVE, NON_FINAL),
        *cancellation_steps(CANCELLABLE),
        COMPLETE,
    ),
)
