"""Modify orders: a change to an existing service, named by ``serviceId``. Its characteristics
sit at the top level of the order; a completed modify order names its serviceId. Modify orders
can need an engineer, so they have the appointment steps (decisions L11)."""

from __future__ import annotations

from ..core.chart import Chart
from ..core.codes import OrderStatus, OrderType
from ..core.contract import Carry
from ..core.spec import OrderTypeSpec
from ..core.wire import AppointedOrder, Name, ServiceCharacteristic
from ._tenant import APPOINTMENTS, CANCELLATION_REASONS, COMMON, STATES, tenant_key


class ModifyServiceOrder(AppointedOrder):
    """A modify order as the KCI carries it (``modifyServiceOrder``)."""

    service_id: Name | None = None
    service_characteristics: list[ServiceCharacteristic] | None = None


SPEC = OrderTypeSpec(
    order_type=OrderType.MODIFY,
    chart=Chart(OrderType.MODIFY, OrderStatus.SENT_TO_SUPPLIER, STATES, COMMON + APPOINTMENTS),
    order_model=ModifyServiceOrder,
    kci_property="modifyServiceOrder",
    characteristics=("serviceCharacteristics",),
    completion=Carry(("serviceId",), why="a completed modify order names its serviceId"),
    placed_by_tenant=True,
    cancellation_reasons=CANCELLATION_REASONS,
    default_key=tenant_key,
)
