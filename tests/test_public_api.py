"""The public surface: each package's __all__ is sorted, complete and importable."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

PACKAGES = [
    "kci_engine",
    "kci_engine.store",
    "kci_engine.delivery",
    "kci_engine.orders",
    "kci_engine.tooling.sandbox",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert len(exported) == len(set(exported))
    for symbol in exported:
        assert getattr(module, symbol) is not None


def test_top_level_exports_what_an_embedder_needs() -> None:
    import kci_engine as engine

    assert {
        "Engine",
        "Event",
        "EventData",
        "Kci",
        "OrderType",
        "OrderStatus",
        "ReasonCode",
        "ProblemCode",
        "EngineError",
        "RefusedEvent",
        "EventNotAllowed",
        "MissingField",
        "ContractViolation",
        "InvalidEventData",
    } <= set(engine.__all__)
    # "@py_..." names are pytest's assertion rewriting, not the package's.
    public = {
        name
        for name, value in vars(engine).items()
        if not name.startswith(("_", "@")) and not isinstance(value, ModuleType)
    } - {"annotations"}
    assert public <= set(engine.__all__), public - set(engine.__all__)
