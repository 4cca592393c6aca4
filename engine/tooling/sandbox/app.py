"""The sandbox gateway as a Starlette (ASGI) app: the Supplier Updates API's two endpoints,
answered the way the real gateway answers them, plus a small control API for tests.

``/v1/auth/supplier/access-token`` and ``/v1/kcis`` follow the fact sheet (spec §1): OAuth2
client credentials, then 204 / 400 / 401 / 422 with the error body ``{uuid, code, messages}``.
``/_sandbox/...`` is the sandbox's own (JSON, no auth): timelines, stats, the fault plan,
expiring tokens and resetting. Faults are drawn before a KCI is looked at, as a gateway in
trouble fails whatever it is sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qs, unquote

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ...core.codes import OrderType
from ...errors import ConfigurationError
from ...orders import parse_kci
from .faults import FaultKind, FaultPlan
from .state import SandboxState, Verdict

#: Drops the connection a request arrived on without answering; ``False`` if it cannot.
Dropper = Callable[[Scope], Awaitable[bool]]

KCIS_PATH = "/v1/kcis"
_ORDER_TAGS = frozenset(t.value for t in OrderType)
_HTTP_ERROR_CODES = {404: "NOT_FOUND", 405: "NOT_IMPLEMENTED"}


def error(
    status: int, code: str, *messages: str, headers: Mapping[str, str] | None = None
) -> Response:
    """An error answer in the gateway's shape: ``{"uuid", "code", "messages"}``."""
    body = {"uuid": str(uuid.uuid4()), "code": code, "messages": list(messages)}
    return JSONResponse(body, status_code=status, headers=headers)


def _oauth_error(code: str) -> Response:
    return JSONResponse({"error": code}, status_code=400, headers={"Cache-Control": "no-store"})


def _validation_messages(exc: ValidationError) -> list[str]:
    """One ``"<loc>: <msg>"`` per pydantic error, the union's tag left out of ``loc``.

    Contract errors already read ``"<field>: <rule>"`` and are passed on as they are.
    """
    messages = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"]]
        if loc and loc[0] in _ORDER_TAGS:
            loc = loc[1:]
        messages.append(f"{'.'.join(loc)}: {err['msg']}" if loc else err["msg"])
    return messages


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _basic(header: str) -> tuple[str, str] | None:
    """``client_id``, ``client_secret`` from an HTTP Basic header (RFC 6749 §2.3.1 encodes
    each form-urlencoded before base64), or ``None`` if the header is not Basic or is garbled."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (unquote(client_id), unquote(secret)) if colon else None


class _DropConnection(Response):
    """Answers nothing: drops the connection (through ``dropper``) so the client sees a
    transport error. Where the server gives no way to drop, it starts an answer it never
    finishes; the server then closes the connection, which a client also sees as a
    transport error (but after a status line)."""

    def __init__(self, dropper: Dropper) -> None:
        super().__init__(status_code=200)
        self._dropper = dropper

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._dropper(scope):
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )


async def _cannot_drop(scope: Scope) -> bool:
    return False


def create_app(state: SandboxState, *, dropper: Dropper = _cannot_drop) -> ASGIApp:
    """The sandbox gateway app over ``state``: a Starlette app, with ``POST /v1/kcis`` taken
    straight to its endpoint.

    Args:
        state: what the gateway remembers (shared with the caller, who may read it directly).
        dropper: how to drop a connection for the ``drop`` fault (the server supplies it).
    """

    async def access_token(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _oauth_error("invalid_request")
        try:
            form = parse_qs((await request.body()).decode("utf-8"), strict_parsing=False)
        except UnicodeDecodeError:
            return _oauth_error("invalid_request")
        fields = {name: values[0] for name, values in form.items() if len(values) == 1}
        if len(fields) != len(form):  # a parameter sent twice (RFC 6749 §3.2)
            return _oauth_error("invalid_request")
        grant = fields.get("grant_type")
        if grant is None:
            return _oauth_error("invalid_request")
        if grant != "client_credentials":
            return _oauth_error("unsupported_grant_type")
        in_body = "client_id" in fields or "client_secret" in fields
        header = request.headers.get("authorization")
        if header is not None and in_body:  # two ways at once (RFC 6749 §2.3)
            return _oauth_error("invalid_request")
        if header is not None:
            credentials = _basic(header)
        else:
            credentials = (fields.get("client_id", ""), fields.get("client_secret", ""))
        if credentials is None or not state.credentials_match(*credentials):
            return _oauth_error("invalid_client")
        body = {
            "access_token": state.issue_token(),
            "expires_in": state.token_ttl,
            "token_type": "Bearer",
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def rejected(status: int, code: str, *messages: str) -> Response:
        state.count_rejected(status)
        return error(status, code, *messages)

    def not_authorised(message: str) -> Response:
        return error(401, "NOT_AUTHORISED", message, headers={"WWW-Authenticate": "Bearer"})

    def process(request: Request, raw: bytes, token: str | None) -> Response:
        """Answer a KCI on its merits: auth, headers, JSON, the contract, the order's history."""
        if token is None or not state.token_valid(token):
            state.count_rejected(401)
            why = "no bearer token" if token is None else "the bearer token is invalid or expired"
            return not_authorised(why)
        if not request.headers.get("x-request-id"):
            return rejected(400, "MALFORMED_REQUEST", "the X-Request-ID header is required")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return rejected(400, "MALFORMED_REQUEST", "the body is not JSON (or nests too deeply)")
        if not isinstance(data, dict):
            return rejected(400, "MALFORMED_REQUEST", "the body is not a JSON object")
        try:
            kci = parse_kci(data)
        except ValidationError as exc:
            return rejected(422, "INVALID_REQUEST", *_validation_messages(exc))
        decision = state.submit(data, kci)
        if decision.verdict is Verdict.REFUSED:
            return rejected(422, "INVALID_REQUEST", decision.message)
        return Response(status_code=204)

    async def kcis(request: Request) -> Response:
        # Read the body first: after a ``slow`` sleep the client may have gone, body and all.
        raw = await request.body()
        token = _bearer(request)
        fault = state.draw_fault()
        if fault is FaultKind.RATE_LIMITED:
            return error(429, "GATEWAY_FAULT", "too many requests", headers={"Retry-After": "1"})
        if fault is FaultKind.SERVER_ERROR:
            status = state.server_error_status()
            if status == 503:
                return Response(status_code=503)
            return error(status, "GATEWAY_FAULT", "the gateway failed to process the request")
        if fault is FaultKind.TOKEN_EXPIRY:
            state.expire_token(token)
            return not_authorised("the bearer token has expired")
        if fault is FaultKind.SLOW:
            await asyncio.sleep(state.fault_plan.slow_seconds)
        pace = state.delay_s()
        if pace:
            await asyncio.sleep(pace)
        response = process(request, raw, token)
        if fault is FaultKind.DROP:
            return _DropConnection(dropper)
        return response

    async def timeline(request: Request) -> Response:
        return JSONResponse(state.timeline(request.path_params["key"]))

    async def orders(request: Request) -> Response:
        return JSONResponse(state.orders())

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = json.loads(await request.body())
            except (ValueError, RecursionError):
                return error(400, "MALFORMED_REQUEST", "the body is not JSON")
            if not isinstance(data, dict):
                return error(400, "MALFORMED_REQUEST", "the body is not a JSON object")
            try:
                plan = FaultPlan.from_json(data, slow_seconds=state.fault_plan.slow_seconds)
            except ConfigurationError as exc:
                return error(422, "INVALID_REQUEST", exc.message)
            state.set_fault_plan(plan)
        return JSONResponse(state.fault_plan.to_json())

    async def expire_tokens(request: Request) -> Response:
        return JSONResponse({"expired": state.expire_tokens()})

    async def reset(request: Request) -> Response:
        state.reset()
        return Response(status_code=204)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_ERROR_CODES.get(exc.status_code, "MALFORMED_REQUEST")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error(exc.status_code, code, message, headers=exc.headers)

    routes = [
        Route("/v1/auth/supplier/access-token", access_token, methods=["POST"]),
        Route(KCIS_PATH, kcis, methods=["POST"]),
        Route("/_sandbox/orders", orders, methods=["GET"]),
        Route("/_sandbox/orders/{key:path}", timeline, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/faults", faults, methods=["GET", "POST"]),
        Route("/_sandbox/expire-tokens", expire_tokens, methods=["POST"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
    ]
    starlette = Starlette(routes=routes, exception_handlers={HTTPException: http_error})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # The hot path skips Starlette's middleware and router: a quarter of the app's time
        # per KCI. The same endpoint is routed through Starlette as well, for other methods.
        if scope["type"] == "http" and scope["path"] == KCIS_PATH and scope["method"] == "POST":
            response = await kcis(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await starlette(scope, receive, send)

    return app
