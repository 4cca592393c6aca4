"""Cease orders: the end of an existing service, named by ``serviceId``. No service
characteristics and no appointment steps (decisions L11, L15); delays, holds, amendments and
cancellations apply as on every tenant-placed order. A completed cease names its serviceId."""

from __future__ import annotations

from ..core.chart import Chart
from ..core.codes import OrderStatus, OrderType
from ..core.contract import Carry
from ..core.spec import OrderTypeSpec
from ..core.wire import Name, ServiceOrder
from ._tenant import CANCELLATION_REASONS, COMMON, STATES, tenant_key


class CeaseServiceOrder(ServiceOrder):
    """A cease order as the KCI carries it (``ceaseServiceOrder``)."""

    service_id: Name | None = None


SPEC = OrderTypeSpec(
    order_type=OrderType.CEASE,
    chart=Chart(OrderType.CEASE, OrderStatus.SENT_TO_SUPPLIER, STATES, COMMON),
    order_model=CeaseServiceOrder,
    kci_property="ceaseServiceOrder",
    characteristics=None,
    completion=Carry(("serviceId",), why="a completed cease order names its serviceId"),
    placed_by_tenant=True,
    cancellation_reasons=CANCELLATION_REASONS,
    default_key=tenant_key,
)
