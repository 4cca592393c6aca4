"""kci-engine: order lifecycles as state machines that keep the customer informed.

Accept an order, apply supplier events, and get back the KCIs (Keep Customer Informed
notifications) to send to the Fibre Cafe Supplier Updates API::

    from kci_engine import Engine, Event, OrderType

    engine = Engine()
    order_id = engine.accept_order(OrderType.PROVIDE, order)
    [kci] = engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S1"}})
"""

import importlib.metadata as _metadata

from ._facade import Engine
from .core.codes import OrderStatus, OrderType, ProblemCode, ReasonCode
from .core.events import Event, EventData
from .core.records import Kci, OrderRecord
from .errors import (
    ContractViolation,
    EngineError,
    EventNotAllowed,
    InvalidEventData,
    MissingField,
    RefusedEvent,
)
from .store import MemoryStore, Store

__all__ = [
    "ContractViolation",
    "Engine",
    "EngineError",
    "Event",
    "EventData",
    "EventNotAllowed",
    "InvalidEventData",
    "Kci",
    "MemoryStore",
    "MissingField",
    "OrderRecord",
    "OrderStatus",
    "OrderType",
    "ProblemCode",
    "ReasonCode",
    "RefusedEvent",
    "Store",
]

try:
    __version__ = _metadata.version("kci-engine")
except (
    _metadata.PackageNotFoundError
):  # pragma: no cover - running from a checkout that is not installed
    __version__ = "0+unknown"
