"""A local stand-in for the Fibre Cafe Supplier Updates API, to test KCI delivery without a
gateway account: it validates every KCI against the contract and the order's history, answers
as the gateway does, keeps each order's timeline, and injects faults on request::

    from kci_engine.tooling.sandbox import SandboxConfig, running_sandbox

    with running_sandbox(SandboxConfig(fault_rate=0.2, seed=7)) as sandbox:
        deliver_to(sandbox.base_url)          # http://127.0.0.1:PORT/v1
        assert sandbox.state.stats()["violations"] == 0

The names are loaded on first use: the web server stack is not imported by every
``kci-engine`` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .faults import ALL_FAULTS, FaultKind, FaultPlan
    from .server import SandboxConfig, SandboxHandle, running_sandbox, serve
    from .state import SandboxState, order_key

_EXPORTS = {
    "ALL_FAULTS": ".faults",
    "FaultKind": ".faults",
    "FaultPlan": ".faults",
    "SandboxConfig": ".server",
    "SandboxHandle": ".server",
    "SandboxState": ".state",
    "create_app": ".app",
    "order_key": ".state",
    "running_sandbox": ".server",
    "serve": ".server",
}

__all__ = [
    "ALL_FAULTS",
    "FaultKind",
    "FaultPlan",
    "SandboxConfig",
    "SandboxHandle",
    "SandboxState",
    "create_app",
    "order_key",
    "running_sandbox",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
