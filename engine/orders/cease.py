"""Cease orders: the end of an existing service, named by ``serviceId``. No appointment steps;
delays, holds, amendments and cancellations apply as on every tenant-placed order."""

from __future__ import annotations

from ..core._machine import Chart
from ..core.codes import OrderStatus, OrderType
from ._tenant import COMMON, STATES

CHART = Chart(
    order_type=OrderType.CEASE,
    initial=OrderStatus.SENT_TO_SUPPLIER,
    states=STATES,
    steps=COMMON,
)
