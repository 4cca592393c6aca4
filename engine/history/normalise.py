"""KCI bodies in the form golden transcripts and history replay compare them: what the tenant is
told, without what depends on the id generator and the clock.

Kept in a module of its own (no database imports) so the scenario tooling can use it cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def normalise(body: Mapping[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """A KCI body as golden transcripts hold it: its id ``<kci N>`` (N counting the order's
    KCIs in ``ids``), its issuedOn ``<issuedOn>``; everything else as it is."""
    kci_id = body["id"]
    label = ids.get(kci_id)
    if label is None:
        label = ids[kci_id] = f"<kci {len(ids) + 1}>"
    return {**body, "id": label, "issuedOn": "<issuedOn>"}  # shallow: bodies are only read
