"""The transport: one KCI to ``POST /kcis``, and the OAuth2 token it needs.

This module sends and classifies; it never decides what to do next. Retries, ordering and
dead-lettering belong to the dispatcher (the split httpx itself makes between transports and
clients). Secrets never leave it: the client secret is a ``SecretStr`` and neither it nor a token
is put in a log line, an error or a repr.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from .._net import is_loopback
from ..errors import ConfigurationError, CredentialsRejected

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
    if parsed.scheme == "https" and parsed.host:
        return parsed
    if parsed.scheme == "http" and is_loopback(parsed.host):
        return parsed
    raise ConfigurationError(
        f"gateway URL {url!r} refused: use https (plain http only to a loopback address)"
    )


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
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        auth: httpx.BasicAuth | httpx._client.UseClientDefault = httpx.USE_CLIENT_DEFAULT
        if self._auth == "basic":
            auth = httpx.BasicAuth(self._client_id, self._secret.get_secret_value())
        else:
            form["client_id"] = self._client_id
            form["client_secret"] = self._secret.get_secret_value()
        response = self._http.post(self._url, data=form, auth=auth)
        if response.status_code == 200:
            try:
                data = json.loads(response.text)
                token = data["access_token"]
                if not isinstance(token, str) or not token:
                    raise TypeError("access_token is not a non-empty string")
                token.encode("ascii")  # it goes into a header
                lifetime = min(float(data.get("expires_in", 3600)), 86_400.0)
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
                raise httpx.DecodingError("token endpoint answered 200 without a token") from None
            self._token = token
            self._expires_at = self._clock() + lifetime
            log.info("obtained a gateway token valid for %.0f s", lifetime)
            return
        if 400 <= response.status_code < 500:
            code = _json_field(response.text, "error") or f"HTTP {response.status_code}"
            raise CredentialsRejected(
                f"the gateway's token endpoint refused client {self._client_id!r}: {code}"
            )
        raise httpx.HTTPStatusError(
            f"token endpoint answered {response.status_code}",
            request=response.request,
            response=response,
        )


class GatewayClient:
    """Sends KCI bodies to the Supplier Updates API.

    Args:
        base_url: e.g. ``https://cvt.fibregateway.com/v1``; plain http only to loopback.
        client_id: the supplier's OAuth2 client id.
        client_secret: its client secret (kept as a ``SecretStr``).
        scope: OAuth2 scope, if the gateway wants one.
        token_auth: send the credentials in the form body or as HTTP Basic.
        timeout_s: per-request timeout.
        verify_tls: verify the gateway's certificate (keep it on).
        transport: an httpx transport (tests use ``httpx.MockTransport``).
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
        base = check_base_url(base_url)
        secret = client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        self._http = httpx.Client(
            base_url=str(base).rstrip("/") + "/",
            timeout=timeout_s,
            verify=verify_tls,
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": "kci-engine"},
        )
        self.tokens = TokenCache(
            self._http,
            "auth/supplier/access-token",
            client_id,
            secret,
            scope=scope,
            auth=token_auth,
        )

    def __repr__(self) -> str:
        return f"GatewayClient(base_url={str(self._http.base_url)!r})"

    def close(self) -> None:
        """Close the client's connections."""
        self._http.close()

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
        request_id = str(uuid.uuid4())
        try:
            token = self.tokens.token()
        except httpx.HTTPError as exc:
            return Attempt(
                Outcome.RETRY, None, f"token endpoint: {_describe(exc)}", None, request_id
            )
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Request-ID": request_id,
            "X-Conversation-ID": conversation_id,
        }
        try:
            with self._http.stream("POST", "kcis", content=body.encode(), headers=headers) as resp:
                status = resp.status_code
                text = "" if 200 <= status < 300 else _read_capped(resp)
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except httpx.HTTPError as exc:
            return Attempt(Outcome.RETRY, None, _describe(exc), None, request_id)
        if 200 <= status < 300:
            return Attempt(Outcome.DELIVERED, status, None, None, request_id)
        error = _error_text(status, text)
        if status == 401:
            self.tokens.invalidate(token)
            return Attempt(Outcome.UNAUTHORISED, status, error, None, request_id)
        if status == 403:
            return Attempt(Outcome.UNAUTHORISED, status, error, None, request_id)
        if status in (408, 429) or status >= 500:
            return Attempt(Outcome.RETRY, status, error, retry_after, request_id)
        return Attempt(Outcome.REJECTED, status, error, None, request_id)


def _read_capped(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_ERROR_BODY:
            break
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


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
