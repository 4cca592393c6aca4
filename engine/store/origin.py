"""How an order began (``kci_order_origin``): the chart version it was created under and its
document then, written in the transaction that creates the order and never changed.

Kept apart from :mod:`.sql` so the store's hot path gains two lines only: ``history replay``
(:mod:`kci_engine.history`) reads these rows back.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from ..core.events import EventEntry
from ..core.records import OrderRecord
from .tables import ORIGINS

INSERT_ORIGIN = ORIGINS.insert().values({c.name: sa.bindparam(c.name) for c in ORIGINS.c})


def origin_row(record: OrderRecord, entry: EventEntry) -> dict[str, Any]:
    """The origin row of a new order, from its record and its first event-log entry."""
    return {
        "order_id": record.order_id,
        "chart_version": entry.chart_version,
        "document": json.dumps(record.document, separators=(",", ":"), ensure_ascii=False),
    }
