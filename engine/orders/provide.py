"""Provide orders: a new service. SERVICE_ID must be on the order before it completes (the
contract check on every COMPLETED KCI of a provide order enforces it)."""

from __future__ import annotations

from ..core._machine import Chart
from ..core.codes import OrderStatus, OrderType
from ._tenant import APPOINTMENTS, COMMON, STATES

CHART = Chart(
    order_type=OrderType.PROVIDE,
    initial=OrderStatus.SENT_TO_SUPPLIER,
    states=STATES,
    steps=COMMON + APPOINTMENTS,
)
