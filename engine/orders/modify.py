"""Modify orders: a change to an existing service, named by ``serviceId``; characteristics sit
at the top level of the order. A completed modify order names its serviceId."""

from __future__ import annotations

from ..core._machine import Chart
from ..core.codes import OrderStatus, OrderType
from ._tenant import APPOINTMENTS, COMMON, STATES

CHART = Chart(
    order_type=OrderType.MODIFY,
    initial=OrderStatus.SENT_TO_SUPPLIER,
    states=STATES,
    steps=COMMON + APPOINTMENTS,
)
