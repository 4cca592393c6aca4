"""The dispatcher's asynchronous sender: hundreds of KCIs in flight on one event loop.

:class:`AsyncGateway` does what :meth:`GatewayClient.send` does (token, headers, one
classified :class:`Attempt`), asynchronously, and with a *total* deadline on every request and
every token fetch: connecting, sending, the headers and the whole body must arrive within
``timeout_s``, so a gateway or proxy that answers one byte a second gives up its worker when the
time is up (httpx's timeouts apply to each read, so they never fire on a trickle).

The HTTP underneath is aiohttp when it is installed (``kci-engine[dispatch]``) and no httpx
transport was given: measured side by side on the dispatcher's workload (2 cores, 128 in flight,
gateway at 50 ms), aiohttp costs 0.1-0.3 ms of CPU per request, httpx over
``httpx-aiohttp``'s transport 0.5-0.9 ms, and ``httpx.AsyncClient``'s own pool collapses past a
few dozen connections (notes in docs/decisions.md). An httpx transport given to the client
(``httpx.MockTransport`` in tests) is used as it is, through ``httpx.AsyncClient``.

Token trouble never holds the senders for long: one fetch at a time, bounded by the deadline;
after a failed fetch every sender is told "no token" at once for a backoff that doubles up to
30 s, instead of queueing behind the lock for its own fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import httpx

from ..errors import ConfigurationError, CredentialsRejected, GatewayUnavailable
from .client import (
    _MAX_ERROR_BODY,
    KCIS_PATH,
    TOKEN_PATH,
    Attempt,
    Outcome,
    classify,
    kci_headers,
    new_request_id,
    token_from_answer,
)

if TYPE_CHECKING:
    from .client import GatewayClient

log = logging.getLogger("kci_engine.delivery")

_USER_AGENT = {"User-Agent": "kci-engine"}


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: the status, the body (at most 64 KiB) and ``Retry-After``."""

    status: int
    text: str
    retry_after: str | None


class _Poster(ABC):
    """POSTs within a total deadline; knows nothing of KCIs."""

    def __init__(self, base_url: str, deadline_s: float) -> None:
        self.base_url = base_url
        self.deadline_s = deadline_s

    @abstractmethod
    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to ``path``.

        Raises:
            GatewayUnavailable: no answer within the deadline, or none at all.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connections."""


class _AiohttpPoster(_Poster):
    """aiohttp, with ``ClientTimeout(total=...)``: the deadline covers connect, send, headers
    and body (the timer lives until the body is read).

    The per-request work is kept to what a KCI needs (it is most of the dispatcher's CPU): the
    URLs are parsed once, there is no cookie jar (the gateway sets no cookies a KCI needs), and
    an answer without a body (the usual 204) is not read chunk by chunk.
    """

    def __init__(
        self, base_url: str, deadline_s: float, *, max_connections: int, verify_tls: bool
    ) -> None:
        super().__init__(base_url, deadline_s)
        import aiohttp
        from yarl import URL

        self._urls = {path: URL(base_url + path) for path in (KCIS_PATH, TOKEN_PATH)}
        connector = aiohttp.TCPConnector(
            limit=max_connections, keepalive_timeout=30, ssl=verify_tls
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=deadline_s, sock_connect=min(deadline_s, 5.0)),
            headers=_USER_AGENT,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        self._failures: tuple[type[BaseException], ...] = (
            aiohttp.ClientError,
            TimeoutError,
            OSError,
        )

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            async with self._session.post(self._urls[path], data=body, headers=headers) as r:
                if r.content.at_eof():
                    return Answer(r.status, "", r.headers.get("Retry-After"))
                got = bytearray()
                async for chunk in r.content.iter_chunked(16384):
                    got += chunk
                    if len(got) >= _MAX_ERROR_BODY:
                        break
                text = got[:_MAX_ERROR_BODY].decode("utf-8", errors="replace")
                return Answer(r.status, text, r.headers.get("Retry-After"))
        except self._failures as exc:
            if isinstance(exc, TimeoutError):
                raise GatewayUnavailable(
                    f"no complete answer within the total timeout of {self.deadline_s:g} s"
                ) from None
            raise GatewayUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        await self._session.close()


class _HttpxPoster(_Poster):
    """``httpx.AsyncClient`` over a given transport, the total deadline by ``asyncio.timeout``."""

    def __init__(
        self,
        base_url: str,
        deadline_s: float,
        *,
        transport: httpx.AsyncBaseTransport | None,
        max_connections: int,
        verify_tls: bool,
    ) -> None:
        super().__init__(base_url, deadline_s)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(deadline_s, connect=min(deadline_s, 5.0)),
            verify=verify_tls,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers=_USER_AGENT,
            trust_env=False,
        )

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            async with asyncio.timeout(self.deadline_s):
                async with self._http.stream("POST", path, content=body, headers=headers) as r:
                    got = bytearray()
                    async for chunk in r.aiter_bytes():
                        got += chunk
                        if len(got) >= _MAX_ERROR_BODY:
                            break
                    text = got[:_MAX_ERROR_BODY].decode("utf-8", errors="replace")
                    return Answer(r.status_code, text, r.headers.get("Retry-After"))
        except TimeoutError:
            raise GatewayUnavailable(
                f"no complete answer within the total timeout of {self.deadline_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        await self._http.aclose()


def _poster(client: GatewayClient, max_in_flight: int) -> _Poster:
    size = max_in_flight + 4  # the token fetch never waits for a connection
    if client.transport is not None:
        if not isinstance(client.transport, httpx.AsyncBaseTransport):
            raise ConfigurationError(
                "the dispatcher needs an asynchronous httpx transport "
                "(an httpx.AsyncBaseTransport, e.g. httpx.MockTransport)"
            )
        return _HttpxPoster(
            client.base_url,
            client.timeout_s,
            transport=client.transport,
            max_connections=size,
            verify_tls=client.verify_tls,
        )
    try:
        return _AiohttpPoster(
            client.base_url, client.timeout_s, max_connections=size, verify_tls=client.verify_tls
        )
    except ImportError:
        log.warning(
            "aiohttp is not installed (pip install 'kci-engine[dispatch]'): delivering through "
            "httpx.AsyncClient, which costs several times the CPU per KCI at high concurrency"
        )
        return _HttpxPoster(
            client.base_url,
            client.timeout_s,
            transport=None,
            max_connections=size,
            verify_tls=client.verify_tls,
        )


class AsyncGateway:
    """Sends KCIs for the dispatcher; create it inside the event loop that uses it.

    ``token_state`` tells whether the gateway currently accepts this client (``ok``), refuses
    its token (``refused``: a 401 after a fresh token, or a 403), or whether no token could be
    had (``unavailable``); the dispatcher reports it and keeps retrying.
    """

    def __init__(self, client: GatewayClient, max_in_flight: int) -> None:
        self.client = client
        self.redact = client.redact
        self._poster = _poster(client, max_in_flight)
        form, basic = client.token_request()
        self._token_body = urlencode(form).encode()
        self._token_headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if basic:
            self._token_headers["Authorization"] = basic
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._margin_s = 60.0
        self._failures = 0
        self._failed_until = 0.0
        self._failure = ""
        self.token_state = "ok"
        self.token_refreshes = 0

    def __repr__(self) -> str:
        return f"AsyncGateway(base_url={self.client.base_url!r})"

    async def aclose(self) -> None:
        await self._poster.aclose()

    async def _get_token(self) -> str:
        token = self._token
        if token is not None and time.monotonic() < self._expires_at - self._margin_s:
            return token
        async with self._lock:
            now = time.monotonic()
            if self._token is not None and now < self._expires_at - self._margin_s:
                return self._token
            if now < self._failed_until:
                raise GatewayUnavailable(self._failure)
            try:
                answer = await self._poster.post(TOKEN_PATH, self._token_body, self._token_headers)
                token, lifetime = token_from_answer(
                    answer.status, answer.text, self.client.client_id, self.redact
                )
            except GatewayUnavailable as exc:
                self._failures += 1
                backoff = min(0.25 * 2 ** min(self._failures, 10), 30.0)
                self._failed_until = time.monotonic() + backoff
                self._failure = f"token endpoint: {self.redact(str(exc))}"
                if self.token_state != "unavailable":
                    log.warning("%s; retrying with backoff", self._failure)
                self.token_state = "unavailable"
                raise GatewayUnavailable(self._failure) from None
            self.redact.add_token(token)
            self._token, self._expires_at = token, time.monotonic() + lifetime
            self._failures = 0
            self.token_refreshes += 1
            log.info("obtained a gateway token valid for %.0f s", lifetime)
            return token

    def _invalidate(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def send(self, body: bytes, conversation_id: str) -> Attempt:
        """POST one KCI body and classify the answer; a 401 gets one fresh token and one more
        try. Never raises for the gateway's behaviour, only for refused credentials.

        Raises:
            CredentialsRejected: the token endpoint refused the client credentials.
        """
        attempt = await self._send_once(body, conversation_id)
        if attempt.outcome is Outcome.UNAUTHORISED and attempt.status_code == 401:
            attempt = await self._send_once(body, conversation_id)
        if attempt.outcome is Outcome.UNAUTHORISED:
            if self.token_state != "refused":
                log.error(
                    "the gateway refuses this client's token (%s); delivery goes on retrying "
                    "with backoff: check the client's permissions",
                    attempt.error,
                )
            self.token_state = "refused"
        elif attempt.status_code is not None and self.token_state != "ok":
            log.warning("the gateway accepts this client's token again")
            self.token_state = "ok"
        return attempt

    async def _send_once(self, body: bytes, conversation_id: str) -> Attempt:
        request_id = new_request_id()
        try:
            token = await self._get_token()
        except GatewayUnavailable as exc:
            return Attempt(Outcome.RETRY, None, str(exc), None, request_id)
        except CredentialsRejected:
            raise
        headers = kci_headers(token, request_id, conversation_id)
        try:
            answer = await self._poster.post(KCIS_PATH, body, headers)
        except GatewayUnavailable as exc:
            return Attempt(Outcome.RETRY, None, self.redact(str(exc)), None, request_id)
        if answer.status == 401:
            self._invalidate(token)
        return classify(answer.status, answer.text, answer.retry_after, request_id, self.redact)
