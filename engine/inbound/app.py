"""The Supplier API's order management as a Starlette (ASGI) app.

``POST /service-orders``, ``POST /service-order-amendments`` and
``POST /service-order-cancellations`` are answered by :class:`~.service.SupplierApi` in a worker
thread (the engine and its database are synchronous); ``POST /ethernet/service-orders`` is
answered 501 ``NOT_IMPLEMENTED``; any other path 404 and any other method 405, all with the
Supplier API's error body ``{uuid, code, messages}``. Mount it under any prefix of a Starlette or
FastAPI app (``app.mount("/fibre-cafe", create_app(...))``) or run it with ``kci-engine serve``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ConfigurationError, StoreBusy
from .auth import Authenticator
from .service import Reply, SupplierApi, error_reply

log = logging.getLogger("kci_engine.inbound")

#: The largest request body answered (an order is a few kilobytes).
MAX_BODY = 1_000_000
Operation = Callable[[Mapping[str, str], bytes], Reply]


def response(reply: Reply, headers: Mapping[str, str] | None = None) -> Response:
    """The HTTP response of a :class:`Reply` (no body when it has none, e.g. a 202)."""
    if reply.body is None:
        return Response(status_code=reply.status, headers=headers)
    content = json.dumps(reply.body, separators=(",", ":"))
    return Response(content, reply.status, headers, media_type="application/json")


def create_app(
    api: SupplierApi,
    *,
    auth: Authenticator | None,
    allow_anonymous: bool = False,
    max_body: int = MAX_BODY,
) -> Starlette:
    """The ASGI app answering the Supplier API's order management on ``api``.

    Args:
        api: the operations and the engine they drive.
        auth: who may call (:class:`~.auth.BasicAuth`, :class:`~.auth.BearerTokens`, your own);
            a request it refuses gets 401 ``NOT_AUTHORISED``.
        allow_anonymous: with ``auth=None``, answer anyone. Only for a server on loopback
            (``kci-engine serve`` checks the host); without it ``auth=None`` is refused.
        max_body: larger request bodies are answered 413.

    Raises:
        ConfigurationError: no authenticator and ``allow_anonymous`` not given.
    """
    if auth is None and not allow_anonymous:
        raise ConfigurationError(
            "the Supplier API needs an authenticator (Basic or bearer tokens); no "
            "authentication only when asked for (allow_anonymous), on loopback"
        )

    def endpoint(operation: Operation) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            headers = {name.lower(): value for name, value in request.headers.items()}
            if auth is not None and not auth(headers):
                log.warning("supplier api: %s refused: not authorised", request.url.path)
                return response(
                    error_reply(401, "Not authorised: missing or invalid credentials"),
                    {"WWW-Authenticate": 'Basic realm="supplier-api", Bearer'},
                )
            declared = headers.get("content-length", "0")
            if declared.isdigit() and int(declared) > max_body:
                return response(error_reply(413, f"the body is larger than {max_body} bytes"))
            body = await request.body()
            if len(body) > max_body:
                return response(error_reply(413, f"the body is larger than {max_body} bytes"))
            try:
                reply = await run_in_threadpool(operation, headers, body)
            except StoreBusy:
                log.warning("supplier api: the database is busy; answered 503")
                return response(error_reply(503, "The supplier is busy; try again"))
            except Exception:
                log.exception("supplier api: %s failed", request.url.path)
                return response(error_reply(500, "An unexpected supplier error occurred"))
            # What support asks for on a ticket: the headers that trace the request (repr'd:
            # they come from the caller). Never the Authorization header.
            log.info(
                "supplier api: POST %s answered %s (X-Request-ID %r, X-Conversation-ID %r, "
                "Tenant %r)",
                request.url.path,
                reply.status,
                headers.get("x-request-id"),
                headers.get("x-conversation-id"),
                headers.get("tenant"),
            )
            return response(reply)

        return handle

    async def not_implemented(request: Request) -> Response:
        return response(error_reply(501, f"{request.url.path} is not implemented by this supplier"))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = f"no such operation: {request.method} {request.url.path}"
            status = 404 if status == 404 else 500
        return response(error_reply(status, message))

    routes = [
        Route("/service-orders", endpoint(api.create_order), methods=["POST"]),
        Route("/service-order-amendments", endpoint(api.amend_order), methods=["POST"]),
        Route("/service-order-cancellations", endpoint(api.cancel_order), methods=["POST"]),
        Route("/ethernet/service-orders", not_implemented, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
