"""Provide orders: a new service. Its service characteristics live in ``serviceOrderItem``, and
a completed provide order carries the SERVICE_ID characteristic (seed 000)."""

from __future__ import annotations

from ..core.chart import Chart
from ..core.codes import OrderStatus, OrderType, ProvideOrderType
from ..core.contract import Carry
from ..core.spec import OrderTypeSpec
from ..core.wire import Address, AppointedOrder, ServiceOrderItem
from ._tenant import APPOINTMENTS, CANCELLATION_REASONS, COMMON, STATES, tenant_key


class ProvideServiceOrder(AppointedOrder):
    """A provide order as the KCI carries it (``provideServiceOrder``)."""

    order_type: ProvideOrderType | None = None
    address: Address | None = None
    service_order_item: ServiceOrderItem | None = None


SERVICE_ID = "SERVICE_ID"

SPEC = OrderTypeSpec(
    order_type=OrderType.PROVIDE,
    chart=Chart(OrderType.PROVIDE, OrderStatus.SENT_TO_SUPPLIER, STATES, COMMON + APPOINTMENTS),
    order_model=ProvideServiceOrder,
    kci_property="provideServiceOrder",
    characteristics=("serviceOrderItem", "serviceCharacteristics"),
    completion=Carry(
        characteristics=(SERVICE_ID,),
        why="a provide order carries the SERVICE_ID service characteristic before it completes",
    ),
    placed_by_tenant=True,
    cancellation_reasons=CANCELLATION_REASONS,
    default_key=tenant_key,
)
