"""The transport: one KCI to ``POST /kcis``, and the OAuth2 token it needs.

This module sends and classifies; it never decides what to do next. Retries, ordering and
dead-lettering belong to the dispatcher (the split httpx itself makes between transports and
clients). Secrets never leave it: the client secret is a ``SecretStr`` and neither it nor a token
is put in a log line, an error or a repr.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import httpx
from pydantic import SecretStr

from .._net import is_loopback
from ..errors import ConfigurationError, CredentialsRejected, GatewayUnavailable

log = logging.getLogger("kci_engine.delivery")

_MAX_ERROR_BODY = 64 * 1024


class Outcome(StrEnum):
    DELIVERED = "DELIVERED"  # 2xx: the gateway has it
    RETRY = "RETRY"  # 5xx, 429, timeout, connection error: try again later
    REJECTED = "REJECTED"  # 400, 404, 422...: the KCI itself is refused; dead-letter it
    UNAUTHORISED = "UNAUTHORISED"  # 401 after a fresh token, or 403: stop and report


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt came to."""

    outcome: Outcome
    status_code: int | None
    error: str | None = None
    retry_after_s: float | None = None
    request_id: str = ""


def check_base_url(url: str) -> httpx.URL:
    """The gateway base URL, refused unless it is https, or http on a loopback address.

    Raises:
        ConfigurationError: a malformed URL, another scheme, or plain http to a remote host.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"gateway URL {url!r} is malformed: {exc}") from None
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ConfigurationError(f"gateway URL {url!r} refused: port {parsed.port} is not 1-65535")
    if parsed.scheme == "https" and parsed.host:
        return parsed
    if parsed.scheme == "http" and is_loopback(parsed.host):
        return parsed
    raise ConfigurationError(
        f"gateway URL {url!r} refused: use https (plain http only to a loopback address)"
    )


class Redactor:
    """Takes this client's own secrets out of text that came from outside (a gateway's error
    body may echo the request's ``Authorization`` header or a token form) before the text is
    stored in ``kci_outbox.last_error``, logged or raised.

    It knows the client secret (as sent: plain, JSON-escaped, form-encoded, and inside the HTTP
    Basic header) and the last few tokens the token endpoint issued.
    """

    _MASK = "***"
    _MIN = 4  # shorter values would mask ordinary words

    def __init__(self, client_id: str, secret: SecretStr) -> None:
        value = secret.get_secret_value()
        basic = base64.b64encode(f"{client_id}:{value}".encode()).decode("ascii")
        self._fixed = [*self._forms(value), basic]
        self._tokens: deque[str] = deque(maxlen=8)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "Redactor()"

    @staticmethod
    def _forms(value: str) -> list[str]:
        return [value, json.dumps(value)[1:-1], quote_plus(value), quote(value, safe="")]

    def add_token(self, token: str) -> None:
        """Remember a token the client received (kept: the last eight)."""
        with self._lock:
            if token not in self._tokens:
                self._tokens.append(token)

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = self._fixed + [form for t in self._tokens for form in self._forms(t)]
        for secret in sorted(set(secrets), key=len, reverse=True):
            if len(secret) >= self._MIN and secret in text:
                text = text.replace(secret, self._MASK)
        return text


def token_form(
    client_id: str, secret: SecretStr, scope: str | None, auth: Literal["form", "basic"]
) -> tuple[dict[str, str], str | None]:
    """The token request's form fields, and its ``Authorization`` header value in Basic mode."""
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    if auth == "basic":
        pair = f"{client_id}:{secret.get_secret_value()}".encode()
        return form, "Basic " + base64.b64encode(pair).decode("ascii")
    form["client_id"] = client_id
    form["client_secret"] = secret.get_secret_value()
    return form, None


def token_from_answer(
    status: int, text: str, client_id: str, redact: Callable[[str], str]
) -> tuple[str, float]:
    """The token and its lifetime (seconds) from the token endpoint's answer.

    Raises:
        CredentialsRejected: a 4xx: the endpoint refused the credentials.
        GatewayUnavailable: a 5xx, or a 200 without a usable token.
    """
    if status == 200:
        try:
            data = json.loads(text)
            token = data["access_token"]
            if not isinstance(token, str) or not token:
                raise TypeError("access_token is not a non-empty string")
            token.encode("ascii")  # it goes into a header
            lifetime = min(float(data.get("expires_in", 3600)), 86_400.0)
            if lifetime != lifetime:  # NaN
                raise ValueError("expires_in is not a number")
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError, AttributeError):
            raise GatewayUnavailable("token endpoint answered 200 without a token") from None
        return token, lifetime
    if 400 <= status < 500:
        code = _json_field(text, "error") or f"HTTP {status}"
        raise CredentialsRejected(
            f"the gateway's token endpoint refused client {client_id!r}: {redact(code)[:200]}"
        )
    raise GatewayUnavailable(f"token endpoint answered {status}")


class TokenCache:
    """An OAuth2 client-credentials token, fetched once, reused, refreshed before it expires.

    Thread-safe: concurrent senders share one token and one refresh.
    """

    def __init__(
        self,
        http: httpx.Client,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str | None = None,
        auth: Literal["form", "basic"] = "form",
        margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        redact: Redactor | None = None,
    ) -> None:
        self._http = http
        self._url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._scope = scope
        self._auth = auth
        self._margin_s = margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.redact = redact or Redactor(client_id, client_secret)

    def __repr__(self) -> str:
        return f"TokenCache(url={self._url!r}, client_id={self._client_id!r})"

    def token(self) -> str:
        """A token valid for at least the margin.

        Raises:
            CredentialsRejected: the token endpoint refused the credentials.
            httpx.HTTPError: the token endpoint could not be reached (the caller retries).
        """
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._margin_s:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (after a 401); the next caller fetches a new one."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> None:
        form, basic = token_form(self._client_id, self._secret, self._scope, self._auth)
        headers = {"Authorization": basic} if basic else None
        response = self._http.post(self._url, data=form, headers=headers)
        try:
            token, lifetime = token_from_answer(
                response.status_code, response.text, self._client_id, self.redact
            )
        except GatewayUnavailable as exc:
            raise httpx.DecodingError(str(exc), request=response.request) from None
        self.redact.add_token(token)
        self._token = token
        self._expires_at = self._clock() + lifetime
        log.info("obtained a gateway token valid for %.0f s", lifetime)


TOKEN_PATH = "auth/supplier/access-token"
KCIS_PATH = "kcis"


class GatewayClient:
    """Sends KCI bodies to the Supplier Updates API.

    Two faces on one configuration: :meth:`send` for plain synchronous code (a script, a test,
    one KCI at a time), and :meth:`open_async`, the dispatcher's asynchronous sender with
    hundreds of requests in flight. Both classify answers the same way and never let a secret
    into an error text.

    Args:
        base_url: e.g. ``https://cvt.fibregateway.com/v1``; plain http only to loopback.
        client_id: the supplier's OAuth2 client id.
        client_secret: its client secret (kept as a ``SecretStr``).
        scope: OAuth2 scope, if the gateway wants one.
        token_auth: send the credentials in the form body or as HTTP Basic.
        timeout_s: the total time one request (or one token fetch) may take, from connecting
            to the last byte of the answer; a gateway that trickles its answer is cut off.
        verify_tls: verify the gateway's certificate (keep it on).
        transport: an httpx transport (tests use ``httpx.MockTransport``); the asynchronous
            sender then goes through it too (it must also be an ``httpx.AsyncBaseTransport``).
        max_connections: connections of the synchronous client.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: SecretStr | str,
        *,
        scope: str | None = None,
        token_auth: Literal["form", "basic"] = "form",
        timeout_s: float = 10.0,
        verify_tls: bool = True,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        if not 0 < timeout_s <= 300:  # also refuses NaN
            raise ConfigurationError(f"timeout_s must be more than 0 and at most 300: {timeout_s}")
        base = check_base_url(base_url)
        secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        self.base_url = str(base).rstrip("/") + "/"
        self.client_id = client_id
        self.scope = scope
        self.token_auth: Literal["form", "basic"] = token_auth
        self.timeout_s = timeout_s
        self.verify_tls = verify_tls
        self.transport = transport
        self._secret = secret
        self.redact = Redactor(client_id, secret)
        self._max_connections = max_connections
        self._sync: httpx.Client | None = None
        self._tokens: TokenCache | None = None

    @property
    def _http(self) -> httpx.Client:
        """The synchronous httpx client, made on first use (the dispatcher never needs it, and
        building its TLS context costs a fifth of a second of CPU)."""
        if self._sync is None:
            self._sync = httpx.Client(
                base_url=self.base_url,
                timeout=self.timeout_s,
                verify=self.verify_tls,
                transport=self.transport,
                limits=httpx.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                ),
                headers={"User-Agent": "kci-engine"},
                trust_env=False,
            )
        return self._sync

    @property
    def tokens(self) -> TokenCache:
        """The synchronous path's token cache."""
        if self._tokens is None:
            self._tokens = TokenCache(
                self._http,
                TOKEN_PATH,
                self.client_id,
                self._secret,
                scope=self.scope,
                auth=self.token_auth,
                redact=self.redact,
            )
        return self._tokens

    def __repr__(self) -> str:
        return f"GatewayClient(base_url={self.base_url!r})"

    def token_request(self) -> tuple[dict[str, str], str | None]:
        """The token request's form and Basic ``Authorization`` value (the async sender's)."""
        return token_form(self.client_id, self._secret, self.scope, self.token_auth)

    def open_async(self, max_in_flight: int) -> Any:
        """The dispatcher's asynchronous sender (an ``AsyncGateway``), bound to the running
        event loop: create it inside the loop that uses it and ``await aclose()`` it there."""
        from .aio import AsyncGateway

        return AsyncGateway(self, max_in_flight)

    def close(self) -> None:
        """Close the client's connections."""
        if self._sync is not None:
            self._sync.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, body: str, conversation_id: str) -> Attempt:
        """POST one KCI body (exactly these bytes) and classify the answer.

        A 401 is answered once by fetching a new token and sending again (a fresh
        ``X-Request-ID``); a second 401 is :attr:`Outcome.UNAUTHORISED`.

        Raises:
            CredentialsRejected: the token endpoint refused the credentials.
        """
        attempt = self._send_once(body, conversation_id)
        if attempt.outcome is Outcome.UNAUTHORISED and attempt.status_code == 401:
            attempt = self._send_once(body, conversation_id)
        return attempt

    def _send_once(self, body: str, conversation_id: str) -> Attempt:
        request_id = new_request_id()
        try:
            token = self.tokens.token()
        except httpx.HTTPError as exc:
            error = f"token endpoint: {describe(exc, self.redact)}"
            return Attempt(Outcome.RETRY, None, error, None, request_id)
        headers = kci_headers(token, request_id, conversation_id)
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._http.stream(
                "POST", KCIS_PATH, content=body.encode(), headers=headers
            ) as resp:
                status = resp.status_code
                text = _read_capped(resp, deadline)
                retry_after = resp.headers.get("Retry-After")
        except (httpx.HTTPError, TimeoutError) as exc:
            return Attempt(Outcome.RETRY, None, describe(exc, self.redact), None, request_id)
        if status == 401:
            self.tokens.invalidate(token)
        return classify(status, text, retry_after, request_id, self.redact)


_ids = random.Random()  # request ids must be unique, not secret: no system call per request
os.register_at_fork(after_in_child=_ids.seed)  # a forked worker never repeats its parent's ids
_VERSION_4 = (4 << 76) | (2 << 62)  # the version and variant bits of a random UUID
_RANDOM_BITS = ~((0xF << 76) | (0x3 << 62))


def new_request_id() -> str:
    """A fresh ``X-Request-ID`` (a random UUID)."""
    h = f"{_ids.getrandbits(128) & _RANDOM_BITS | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def kci_headers(token: str, request_id: str, conversation_id: str) -> dict[str, str]:
    """The headers of ``POST /kcis``."""
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "X-Request-ID": request_id,
        "X-Conversation-ID": conversation_id,
    }


def classify(
    status: int,
    text: str,
    retry_after: str | None,
    request_id: str,
    redact: Callable[[str], str],
) -> Attempt:
    """What an answer to ``POST /kcis`` means for the KCI (its body ``text`` is redacted)."""
    if 200 <= status < 300:
        return Attempt(Outcome.DELIVERED, status, None, None, request_id)
    error = _error_text(status, redact(text))
    if status in (401, 403):
        return Attempt(Outcome.UNAUTHORISED, status, error, None, request_id)
    if status in (408, 429) or status >= 500:
        return Attempt(Outcome.RETRY, status, error, _retry_after(retry_after), request_id)
    return Attempt(Outcome.REJECTED, status, error, None, request_id)


def _read_capped(response: httpx.Response, deadline: float) -> str:
    """The answer's body (at most 64 KiB; none kept for a 2xx), read before ``deadline``
    (``time.monotonic``): a body trickled a byte at a time is cut off there."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway's answer took longer than the total timeout")
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_ERROR_BODY:
            break
    if 200 <= response.status_code < 300:
        return ""
    return b"".join(chunks)[:_MAX_ERROR_BODY].decode("utf-8", errors="replace")


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (it may be a number of seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().replace(".", "", 1).isdigit():
        return max(0.0, min(float(value), 3600.0))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), 3600.0))


def _json_field(text: str, name: str) -> str | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _error_text(status: int, text: str) -> str:
    """The gateway's ``{uuid, code, messages}`` as one line, or what was there instead."""
    try:
        data: Any = json.loads(text) if text else None
    except (ValueError, RecursionError):
        data = None
    if (
        isinstance(data, dict)
        and isinstance(data.get("code"), str)
        and isinstance(data.get("messages"), list)
    ):
        messages = "; ".join(str(m) for m in data["messages"])[:2000]
        code, uuid_ = data["code"][:100], str(data.get("uuid"))[:100]
        return f"HTTP {status} {code} (uuid {uuid_}): {messages}"
    if not text:
        return f"HTTP {status} with no body"
    snippet = " ".join(text[:200].split())
    return f"HTTP {status} with a body that is not a Fibre Cafe error: {snippet!r}"


def describe(exc: BaseException, redact: Callable[[str], str]) -> str:
    """An exception as one redacted line for ``last_error`` and the log."""
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {redact(text)}" if text else type(exc).__name__
