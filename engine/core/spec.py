"""What makes an order type what it is, in one object: :class:`OrderTypeSpec`.

Where order types differ (the chart, the wire model, the property that carries the order in a
KCI, where service characteristics live, what a completed order carries, who places the order,
the reasons a cancellation may give), the difference is a field of the spec; code elsewhere reads
the field and never branches on the order type. The four specs are in ``engine/orders/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from ._machine import Machine
from .chart import Chart, Edge, check_structure, entered_from, expand
from .codes import CancellationReason, OrderType
from .contract import STATUSES, Carry, Demands, status_demands
from .events import Event
from .wire import KciBody, ServiceOrder, kci_model


def status_demands_any(spec: OrderTypeSpec) -> list[Carry]:
    """Every carry any status asks of an order of ``spec``'s type, in table order."""
    out: list[Carry] = []
    for status in STATUSES:
        out += [c for c in status_demands(status, spec) if c not in out]
    return out


class OrderTypeSpec:
    """An order type, declared once.

    Args:
        order_type: which one.
        chart: its lifecycle, with final and waiting states marked.
        order_model: the pydantic model of its order, as the KCI carries it.
        kci_property: the KCI body property that carries the order (``provideServiceOrder``).
        characteristics: the wire path of its service characteristics list
            (``("serviceOrderItem", "serviceCharacteristics")``), ``None`` if it has none.
        completion: what a completed order of this type carries (SERVICE_ID on a provide order).
        placed_by_tenant: tenant-placed (accepted from the gateway) or supplier-created.
        cancellation_reasons: the reasons a tenant's cancellation request may give.
        default_key: the engine's key for an order document of this type, if it can tell.

    Raises:
        ChartError: the chart is malformed (see :func:`~kci_engine.core.chart.check_structure`).
    """

    def __init__(
        self,
        *,
        order_type: OrderType,
        chart: Chart,
        order_model: type[ServiceOrder],
        kci_property: str,
        characteristics: tuple[str, ...] | None,
        completion: Carry | None,
        placed_by_tenant: bool,
        cancellation_reasons: frozenset[CancellationReason],
        default_key: Callable[[Mapping[str, Any]], str | None],
    ) -> None:
        self.order_type = order_type
        self.chart = chart
        self.order_model = order_model
        self.kci_property = kci_property
        self.characteristics = characteristics
        self.completion = completion
        self.placed_by_tenant = placed_by_tenant
        self.cancellation_reasons = cancellation_reasons
        self.default_key = default_key
        self.edges: tuple[Edge, ...] = tuple(expand(chart))
        check_structure(chart, self.edges)
        self.machine = Machine(chart, self.edges)
        self.kci_model: type[KciBody] = kci_model(self)

    def __repr__(self) -> str:
        return f"OrderTypeSpec({self.order_type.value})"

    def with_chart(self, chart: Chart) -> OrderTypeSpec:
        """The same order type running ``chart`` instead: what a reviewer tries before changing
        the real one (and what ``history replay`` checks stored lifecycles against).

        Raises:
            ChartError: the chart is malformed.
        """
        return OrderTypeSpec(
            order_type=self.order_type,
            chart=chart,
            order_model=self.order_model,
            kci_property=self.kci_property,
            characteristics=self.characteristics,
            completion=self.completion,
            placed_by_tenant=self.placed_by_tenant,
            cancellation_reasons=self.cancellation_reasons,
            default_key=self.default_key,
        )

    # --- the contract's view of the order type (kci_engine.core.contract.OrderShape) ----------

    @property
    def characteristics_field(self) -> str | None:
        """The wire path of the service characteristics, dotted, as errors name it."""
        return ".".join(self.characteristics) if self.characteristics else None

    def characteristic(self, order: Mapping[str, Any], name: str) -> str | None:
        """The value of the service characteristic ``name`` on a wire-form order, if any."""
        for item in self.characteristic_items(order):
            if item.get("name") == name:
                value: str | None = item.get("value")
                return value
        return None

    def characteristic_items(self, order: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The order's service characteristics (``[]`` if the type keeps none)."""
        if not self.characteristics:
            return []
        node: Any = order
        for key in self.characteristics:
            node = node.get(key) if isinstance(node, Mapping) else None
        return list(node or ())

    def with_characteristics(
        self, order: Mapping[str, Any], items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """A copy of ``order`` with its characteristics list replaced by ``items``.

        Raises:
            ValueError: the order type keeps no service characteristics.
        """
        if not self.characteristics:
            raise ValueError(f"a {self.order_type} order carries no service characteristics")
        new = dict(order)
        *parents, last = self.characteristics
        node = new
        for key in parents:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        node[last] = items
        return new

    # --- the chart's view -----------------------------------------------------------------------

    @cached_property
    def synchronous_answers(self) -> Mapping[str, Event]:
        """The statuses a synchronous 201 answer to the create request may give, and the event
        that records each (a step from the initial status that the gateway tells the tenant)."""
        return {
            edge.dest: edge.step.event
            for edge in self.edges
            if edge.step.told_by_gateway and edge.source == self.chart.initial
        }

    def edge_demands(self, edge: Edge) -> Demands:
        """What the KCI of ``edge`` must carry: its reason code's rules, and what the status it
        moves into carries that the status it leaves did not (a returning step goes back to a
        status the order already met, and a step that keeps the status adds nothing)."""
        carries: tuple[Carry, ...] = ()
        if not edge.internal and not edge.step.returns:
            had = self._carried_in(edge.source, frozenset())
            carries = tuple(c for c in status_demands(edge.dest, self) if c not in had)
        return Demands(edge.step.reason, carries)

    def _carried_in(self, status: str, seen: frozenset[str]) -> tuple[Carry, ...]:
        """What every order in ``status`` carries: for a waiting status, what all the statuses
        it can be entered from carry."""
        state = self.chart.state(status)
        if state is None or not state.waiting or status in seen:
            return status_demands(status, self)
        sources = entered_from(self.chart).get(status, set())
        carried = [set(self._carried_in(s, seen | {status})) for s in sorted(sources)]
        common = set.intersection(*carried) if carried else set()
        return tuple(c for c in status_demands_any(self) if c in common)

    @cached_property
    def version(self) -> str:
        """The chart version: a fingerprint of this chart and the contract tables
        (:func:`~kci_engine.core.version.chart_version`), recorded on each order it creates."""
        from .version import chart_version  # version imports this module's type only

        return chart_version(self)

    def allowed(self, status: str) -> frozenset[Event]:
        """The events allowed in ``status``."""
        return self.machine.allowed(status)
