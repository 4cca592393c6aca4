"""The four order lifecycles, one module each, declared as data and compiled once at import."""

from __future__ import annotations

from ..core._lifecycle import run_step
from ..core._machine import Chart, CompiledChart
from ..core.codes import OrderType
from . import cease, modify, provide, unsolicited_cease

CHARTS: dict[OrderType, Chart] = {
    OrderType.PROVIDE: provide.CHART,
    OrderType.CEASE: cease.CHART,
    OrderType.MODIFY: modify.CHART,
    OrderType.UNSOLICITED_CEASE: unsolicited_cease.CHART,
}

MACHINES: dict[OrderType, CompiledChart] = {
    order_type: CompiledChart(chart, run_step) for order_type, chart in CHARTS.items()
}
