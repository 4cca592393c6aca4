"""A local stand-in for the Fibre Cafe Supplier Updates API, to test KCI delivery without a
gateway account: it validates every KCI against the contract and the order's history, answers
as the gateway does, keeps each order's timeline, and injects faults on request::

    from engine.sandbox import SandboxConfig, running_sandbox

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
    from engine.sandbox.app import create_app
    from engine.sandbox.faults import ALL_FAULTS, FaultKind, FaultPlan
    from engine.sandbox.server import SandboxConfig, SandboxHandle, running_sandbox, serve
    from engine.sandbox.state import SandboxState, order_key

_EXPORTS = {
    "ALL_FAULTS": "engine.sandbox.faults",
    "FaultKind": "engine.sandbox.faults",
    "FaultPlan": "engine.sandbox.faults",
    "SandboxConfig": "engine.sandbox.server",
    "SandboxHandle": "engine.sandbox.server",
    "SandboxState": "engine.sandbox.state",
    "create_app": "engine.sandbox.app",
    "order_key": "engine.sandbox.state",
    "running_sandbox": "engine.sandbox.server",
    "serve": "engine.sandbox.server",
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
    return getattr(importlib.import_module(module), name)
