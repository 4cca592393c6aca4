"""The public surface: each package's __all__ is sorted, complete and importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["engine", "engine.store", "engine.delivery", "engine.sandbox"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert len(exported) == len(set(exported))
    for symbol in exported:
        assert getattr(module, symbol) is not None


def test_top_level_exports_what_an_embedder_needs() -> None:
    import engine

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
    public = {n for n in vars(engine) if not n.startswith(("_", "@"))} - {
        "annotations",
        "codes",
        "errors",
        "events",
        "facade",
        "records",
        "store",
        "kci",
        "machine",
        "lifecycle",
        "documents",
        "rules",
        "orders",
        "net",
        "demo",
        "testing",
        "delivery",
        "sandbox",
        "diagrams",
        "cli",
        "scenarios",
        "pytest_plugin",
    }
    assert public <= set(engine.__all__), public - set(engine.__all__)
