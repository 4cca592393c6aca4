"""Unsolicited ceases: created by the supplier (the losing side's network), never amended.

The order starts in the internal state ``NEW`` and is created as ACKNOWLEDGED or IN_PROGRESS,
whichever status the order document asks for, with a CREATED KCI. The tenant may ask to cancel
it, with the unsolicited-cease reasons only; the supplier may also withdraw it (decisions L12).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.chart import NEW, Chart, State, Step, When, final, waiting
from ..core.codes import CancellationReason as C
from ..core.codes import OrderStatus as S
from ..core.codes import OrderType, UnsolicitedCeaseReason
from ..core.codes import ReasonCode as R
from ..core.events import Event as E
from ..core.spec import OrderTypeSpec
from ..core.wire import Name, ServiceOrder, WireDateTime
from ._shared import COMPLETE, cancellation_steps, commit_steps, progress_steps, supplier_statuses


class UnsolicitedCeaseServiceOrder(ServiceOrder):
    """An unsolicited cease as the KCI carries it (``unsolicitedCeaseServiceOrder``, a name
    chosen by analogy: decisions C7). Its serviceId, reason and requestedCeaseDate are part of
    the order, so they are required by the model (decisions L16)."""

    supplier_order_reference: Name
    service_id: Name
    reason: UnsolicitedCeaseReason
    requested_cease_date: WireDateTime


STATES: tuple[State, ...] = (
    State(NEW),
    State(S.ACKNOWLEDGED),
    State(S.IN_PROGRESS),
    waiting(S.HELD),
    waiting(S.PENDING_CANCELLATION),
    final(S.CANCELLED),
    final(S.COMPLETED),
)
UNDER_WAY = (S.ACKNOWLEDGED, S.IN_PROGRESS)
CANCELLABLE = (*UNDER_WAY, S.HELD)


def _asks_for(status: S) -> When:
    def test(firing: Any) -> bool:
        return bool(firing.record.document.get("status") == status)

    return When(f"order.status = {status}", test)


def _key(document: Mapping[str, Any]) -> str | None:
    reference = document.get("supplierOrderReference")
    return str(reference) if reference else None


SPEC = OrderTypeSpec(
    order_type=OrderType.UNSOLICITED_CEASE,
    chart=Chart(
        OrderType.UNSOLICITED_CEASE,
        NEW,
        STATES,
        (
            Step(E.CREATE, (NEW,), S.ACKNOWLEDGED, R.CREATED, when=_asks_for(S.ACKNOWLEDGED)),
            Step(E.CREATE, (NEW,), S.IN_PROGRESS, R.CREATED, when=_asks_for(S.IN_PROGRESS)),
            *commit_steps(),
            *progress_steps(UNDER_WAY, supplier_statuses(STATES)),
            *cancellation_steps(CANCELLABLE),
            COMPLETE,
        ),
    ),
    order_model=UnsolicitedCeaseServiceOrder,
    kci_property="unsolicitedCeaseServiceOrder",
    characteristics=None,
    completion=None,
    placed_by_tenant=False,
    cancellation_reasons=frozenset(
        {
            C.NO_AUTHORISATION,
            C.CUSTOMER_NOT_AWARE,
            C.DELIBERATE_MISLEAD,
            C.PURCHASED_DIFFERENT_PRODUCT,
            C.END_USER_NOT_MOVING,
        }
    ),
    default_key=_key,
)
