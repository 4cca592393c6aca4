"""The gateway client (transport only), against httpx.MockTransport: tokens, headers, and how
every kind of answer is classified."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import httpx
import pytest
from kci_engine.delivery.client import (
    CredentialsRejected,
    GatewayClient,
    Outcome,
    TokenCache,
    check_base_url,
    new_request_id,
)
from kci_engine.delivery.policy import RetryPolicy
from kci_engine.errors import ConfigurationError
from pydantic import SecretStr

from tests.forking import drawn_in_child

SECRET = "s3cr3t-value"
TOKEN = "tok-abc-123"
BODY = '{"id":"x","sequenceNumber":1}'

Handler = Callable[[httpx.Request], httpx.Response]


def _token_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, json={"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}
    )


def _client(kcis: Handler, token: Handler = _token_ok, **kwargs: object) -> GatewayClient:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/supplier/access-token"):
            return token(request)
        assert request.url.path.endswith("/kcis")
        return kcis(request)

    return GatewayClient(
        "https://gw.example/v1", "client-1", SECRET, transport=httpx.MockTransport(route), **kwargs
    )


def test_delivered_on_204_with_the_required_headers_and_the_exact_body() -> None:
    seen: list[httpx.Request] = []

    def kcis(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    client = _client(kcis)
    assert client.send(BODY, "conv-1").outcome is Outcome.DELIVERED
    assert client.send(BODY, "conv-1").outcome is Outcome.DELIVERED
    first, second = seen
    assert first.content == BODY.encode()
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["X-Conversation-ID"] == "conv-1"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_never_repeats_its_parents_request_ids() -> None:
    new_request_id()
    child = drawn_in_child(new_request_id, 20)
    assert len(child) == 20
    assert not set(child) & {new_request_id() for _ in range(20)}


def test_token_is_fetched_once_and_reused() -> None:
    calls: list[httpx.Request] = []

    def token(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _token_ok(request)

    client = _client(lambda r: httpx.Response(204), token)
    for _ in range(5):
        client.send(BODY, "c")
    assert len(calls) == 1
    form = dict(httpx.QueryParams(calls[0].content.decode()))
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "client-1",
        "client_secret": SECRET,
    }


def test_basic_auth_mode_sends_credentials_in_the_header() -> None:
    calls: list[httpx.Request] = []

    def token(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _token_ok(request)

    _client(lambda r: httpx.Response(204), token, token_auth="basic").send(BODY, "c")
    assert calls[0].headers["Authorization"].startswith("Basic ")
    assert "client_secret" not in calls[0].content.decode()


def test_token_is_refreshed_before_it_expires() -> None:
    now = [0.0]
    fetched: list[int] = []

    def token(request: httpx.Request) -> httpx.Response:
        fetched.append(1)
        return httpx.Response(200, json={"access_token": f"t{len(fetched)}", "expires_in": 120})

    http = httpx.Client(base_url="https://gw.example/v1/", transport=httpx.MockTransport(token))
    cache = TokenCache(
        http, "auth/supplier/access-token", "c", SecretStr("s"), clock=lambda: now[0]
    )
    assert cache.token() == "t1"
    now[0] = 59.0
    assert cache.token() == "t1"
    now[0] = 61.0  # within the 60 s margin of expiry
    assert cache.token() == "t2"


def test_401_fetches_a_new_token_once_and_sends_again() -> None:
    tokens = iter(["old", "new"])
    answers: list[str] = []

    def token(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": next(tokens), "expires_in": 3600})

    def kcis(request: httpx.Request) -> httpx.Response:
        answers.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer old":
            return httpx.Response(
                401, json={"uuid": "u", "code": "NOT_AUTHORISED", "messages": ["expired"]}
            )
        return httpx.Response(204)

    assert _client(kcis, token).send(BODY, "c").outcome is Outcome.DELIVERED
    assert answers == ["Bearer old", "Bearer new"]


def test_401_after_a_fresh_token_is_unauthorised() -> None:
    result = _client(
        lambda r: httpx.Response(
            401, json={"uuid": "u", "code": "NOT_AUTHORISED", "messages": ["no"]}
        )
    ).send(BODY, "c")
    assert result.outcome is Outcome.UNAUTHORISED
    assert "NOT_AUTHORISED" in (result.error or "")


def test_refused_credentials_raise_without_the_secret() -> None:
    client = _client(
        lambda r: httpx.Response(204),
        lambda r: httpx.Response(400, json={"error": "invalid_client"}),
    )
    with pytest.raises(CredentialsRejected) as caught:
        client.send(BODY, "c")
    assert "invalid_client" in caught.value.message
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("response", "outcome", "retry_after"),
    [
        (httpx.Response(503), Outcome.RETRY, None),
        (
            httpx.Response(500, json={"uuid": "u", "code": "GATEWAY_FAULT", "messages": ["x"]}),
            Outcome.RETRY,
            None,
        ),
        (httpx.Response(429, headers={"Retry-After": "7"}), Outcome.RETRY, 7.0),
        (
            httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            Outcome.RETRY,
            0.0,
        ),
        (httpx.Response(408), Outcome.RETRY, None),
        (
            httpx.Response(
                422, json={"uuid": "u1", "code": "INVALID_REQUEST", "messages": ["bad"]}
            ),
            Outcome.REJECTED,
            None,
        ),
        (
            httpx.Response(400, json={"uuid": "u2", "code": "MALFORMED_REQUEST", "messages": []}),
            Outcome.REJECTED,
            None,
        ),
        (
            httpx.Response(404, json={"uuid": "u3", "code": "NOT_FOUND", "messages": ["order"]}),
            Outcome.REJECTED,
            None,
        ),
        (httpx.Response(403, text="<html>WAF</html>"), Outcome.UNAUTHORISED, None),
        (httpx.Response(200), Outcome.DELIVERED, None),
    ],
)
def test_answers_are_classified(
    response: httpx.Response, outcome: Outcome, retry_after: float | None
) -> None:
    result = _client(lambda r: response).send(BODY, "c")
    assert result.outcome is outcome
    assert result.retry_after_s == retry_after
    assert result.status_code == response.status_code


def test_gateway_error_body_is_kept_for_the_operator() -> None:
    result = _client(
        lambda r: httpx.Response(
            422,
            json={"uuid": "e-1", "code": "INVALID_REQUEST", "messages": ["problemCode missing"]},
        )
    ).send(BODY, "c")
    assert result.error == "HTTP 422 INVALID_REQUEST (uuid e-1): problemCode missing"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "HTTP 422 with no body"),
        (b"not json at all", "not a Fibre Cafe error: 'not json at all'"),
        (b'{"error": "wrong shape"}', "not a Fibre Cafe error"),
        (b"x" * 5_000_000, "not a Fibre Cafe error: 'xxxx"),
    ],
)
def test_odd_error_bodies_are_described_not_crashed_on(body: bytes, expected: str) -> None:
    result = _client(lambda r: httpx.Response(422, content=body)).send(BODY, "c")
    assert result.outcome is Outcome.REJECTED
    assert expected in (result.error or "")
    assert len(result.error or "") < 400


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
    ],
)
def test_transport_failures_are_retryable(exc: Exception) -> None:
    def kcis(request: httpx.Request) -> httpx.Response:
        raise exc

    result = _client(kcis).send(BODY, "c")
    assert result.outcome is Outcome.RETRY
    assert type(exc).__name__ in (result.error or "")


def test_unreachable_token_endpoint_is_retryable() -> None:
    def token(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    assert _client(lambda r: httpx.Response(204), token).send(BODY, "c").outcome is Outcome.RETRY


@pytest.mark.parametrize(
    "url", ["http://gw.example/v1", "ftp://x/v1", "http://10.0.0.1/v1", "not a url", "https://"]
)
def test_plain_http_is_refused_unless_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError, match="gateway URL"):
        check_base_url(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8780/v1", "http://localhost/v1", "http://[::1]:1/v1", "https://gw/v1"]
)
def test_loopback_http_and_https_are_accepted(url: str) -> None:
    assert check_base_url(url)


def test_secrets_never_reach_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = _client(
        lambda r: httpx.Response(401, json={"uuid": "u", "code": "NOT_AUTHORISED", "messages": []})
    )
    client.send(BODY, "c")
    text = caplog.text + repr(client) + repr(client.tokens)
    assert SECRET not in text
    assert TOKEN not in text


def test_backoff_is_full_jitter_capped_and_honours_retry_after() -> None:
    import random

    policy = RetryPolicy(base_s=1, cap_s=10, horizon_s=100, rng=random.Random(1))
    delays = [policy.delay_s(n) for n in range(1, 30)]
    assert all(0 <= d <= 10 for d in delays)
    assert max(delays[5:]) > 5  # grows towards the cap
    assert policy.delay_s(1, retry_after_s=30) == 30
    assert policy.next_attempt_ms(1, committed_at_ms=0, now_ms=1000, retry_after_s=None) is not None
    assert policy.next_attempt_ms(1, committed_at_ms=0, now_ms=100_000, retry_after_s=5) is None


def test_error_body_messages_are_json_safe() -> None:
    result = _client(
        lambda r: httpx.Response(422, json={"uuid": "u", "code": "X", "messages": [{"a": 1}]})
    ).send(BODY, "c")
    assert json.dumps(result.error)


@pytest.mark.parametrize("token", [None, "", 42, ["t"]])
def test_a_token_answer_without_a_usable_token_is_retryable(token: object) -> None:
    """Not a string (null, a number, a list) or empty: never sent as a Bearer token."""
    sent: list[httpx.Request] = []

    def kcis(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    answer = httpx.Response(200, json={"access_token": token, "expires_in": 3600})
    result = _client(kcis, lambda r: answer).send(BODY, "c")
    assert result.outcome is Outcome.RETRY
    assert sent == []
