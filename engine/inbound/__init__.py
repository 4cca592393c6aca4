"""The inbound half: the Supplier API's order management (the operations the gateway calls on
the supplier) as an ASGI app that drives the engine.

    from kci_engine import Engine
    from kci_engine.inbound import SupplierApi, create_app
    from kci_engine.store import SqlStore

    api = SupplierApi(Engine(SqlStore("sqlite:///kci.db")), MyLogic())
    app = create_app(api, auth=BearerTokens(["..."]))   # mount it, or run `kci-engine serve`

:mod:`.decisions` is what the supplier writes (its logic); :mod:`.service` answers requests
without HTTP; :mod:`.app` is the Starlette app and :mod:`.auth` its authentication. The web
stack (the ``serve`` extra: Starlette, uvicorn) is imported on first use only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .decisions import (
    Acknowledge,
    AmendmentRequest,
    AnswerLater,
    Apply,
    CancellationRequest,
    Commit,
    Later,
    OrderDecision,
    OrderRequest,
    Reject,
    RequestDecision,
    SupplierLogic,
)
from .service import Reply, SupplierApi, error_reply

if TYPE_CHECKING:
    from .app import create_app
    from .auth import Authenticator, BasicAuth, BearerTokens, ServeSettings
    from .server import ServeConfig, ServerHandle, running_server, serve

_EXPORTS = {
    "Authenticator": ".auth",
    "BasicAuth": ".auth",
    "BearerTokens": ".auth",
    "ServeSettings": ".auth",
    "ServeConfig": ".server",
    "ServerHandle": ".server",
    "create_app": ".app",
    "running_server": ".server",
    "serve": ".server",
}

__all__ = [
    "Acknowledge",
    "AmendmentRequest",
    "AnswerLater",
    "Apply",
    "Authenticator",
    "BasicAuth",
    "BearerTokens",
    "CancellationRequest",
    "Commit",
    "Later",
    "OrderDecision",
    "OrderRequest",
    "Reject",
    "Reply",
    "RequestDecision",
    "ServeConfig",
    "ServeSettings",
    "ServerHandle",
    "SupplierApi",
    "SupplierLogic",
    "create_app",
    "error_reply",
    "running_server",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
