"""The sandbox gateway, over real HTTP: a uvicorn server on 127.0.0.1 and an httpx client."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from kci_engine.errors import ConfigurationError
from kci_engine.tooling.demo import Played, play
from kci_engine.tooling.sandbox import (
    ALL_FAULTS,
    FaultKind,
    FaultPlan,
    SandboxConfig,
    SandboxHandle,
    SandboxState,
    create_app,
    order_key,
    running_sandbox,
)
from kci_engine.tooling.sandbox.command import sandbox as sandbox_command
from kci_engine.tooling.sandbox.faults import FaultInjector
from kci_engine.tooling.testing import test_engine

CLIENT = ("sandbox-client", "sandbox-secret")
Body = dict[str, Any]


# --- Fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def played() -> list[Played]:
    """The demo lifecycles: 31 valid KCIs over 8 orders of every type."""
    return list(play(test_engine()))


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxHandle]:
    with running_sandbox(SandboxConfig(slow_seconds=0.6)) as handle:
        yield handle


@pytest.fixture
def gw(server: SandboxHandle) -> Iterator[SandboxHandle]:
    """The module's sandbox, reset: no tokens, no timelines, zero stats, no faults."""
    server.state.reset()
    yield server
    server.state.reset()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


@pytest.fixture
def provide(played: list[Played]) -> list[Body]:
    """The bodies of the first provide sample (11 KCIs, numbered 1..11), copied."""
    return [copy.deepcopy(k.body) for k in played[0].kcis]


def get_token(client: httpx.Client, gw: SandboxHandle) -> str:
    response = client.post(gw.token_url, data={"grant_type": "client_credentials"}, auth=CLIENT)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def send(
    client: httpx.Client,
    gw: SandboxHandle,
    body: Body | bytes,
    token: str | None,
    *,
    request_id: bool = True,
    timeout: float | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if request_id:
        headers["X-Request-ID"] = str(uuid.uuid4())
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    return client.post(gw.kcis_url, content=content, headers=headers, **kw)


def set_faults(client: httpx.Client, gw: SandboxHandle, **plan: Any) -> httpx.Response:
    return client.post(gw.root_url + "/_sandbox/faults", json=plan)


def assert_error(response: httpx.Response, status: int, code: str) -> list[str]:
    """The response is the gateway's error shape with this status and code; its messages."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"uuid", "code", "messages"}
    uuid.UUID(body["uuid"])
    assert body["code"] == code
    assert body["messages"]
    assert all(isinstance(m, str) and m for m in body["messages"])
    messages: list[str] = body["messages"]
    return messages


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- Tokens --------------------------------------------------------------------------------------


def test_token_by_form_body_is_a_bearer_token_that_opens_kcis(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT[0], "client_secret": CLIENT[1]}
    response = client.post(gw.token_url, data=form)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32
    assert send(client, gw, provide[0], body["access_token"]).status_code == 204


def test_token_by_basic_auth_differs_on_each_request(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    first, second = get_token(client, gw), get_token(client, gw)
    assert first != second
    assert send(client, gw, provide[0], second).status_code == 204
    assert gw.state.stats()["tokens_issued"] == 2


@pytest.mark.parametrize("how", ["form", "basic"])
def test_token_with_wrong_secret_is_invalid_client(
    gw: SandboxHandle, client: httpx.Client, how: str
) -> None:
    if how == "form":
        form = {"grant_type": "client_credentials", "client_id": CLIENT[0], "client_secret": "x"}
        response = client.post(gw.token_url, data=form)
    else:
        response = client.post(
            gw.token_url, data={"grant_type": "client_credentials"}, auth=(CLIENT[0], "x")
        )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_client"}
    assert gw.state.stats()["tokens_issued"] == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": {"client_id": CLIENT[0], "client_secret": CLIENT[1]}}, "invalid_request"),
        ({"data": {"grant_type": "password"}, "auth": CLIENT}, "unsupported_grant_type"),
        ({"json": {"grant_type": "client_credentials"}, "auth": CLIENT}, "invalid_request"),
        (
            {"data": {"grant_type": "client_credentials", "client_id": CLIENT[0]}, "auth": CLIENT},
            "invalid_request",
        ),
        ({"data": {"grant_type": "client_credentials"}}, "invalid_client"),
        (
            {"data": {"grant_type": "client_credentials"}, "headers": {"Authorization": "Basic !"}},
            "invalid_client",
        ),
    ],
    ids=["no-grant", "other-grant", "json-body", "two-auth-methods", "no-client", "bad-basic"],
)
def test_token_request_errors(
    gw: SandboxHandle, client: httpx.Client, kwargs: dict[str, Any], error: str
) -> None:
    response = client.post(gw.token_url, **kwargs)
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_token_expires_after_its_ttl() -> None:
    now = [100.0]
    state = SandboxState(client_id="a", client_secret="b", token_ttl=60, clock=lambda: now[0])
    token = state.issue_token()
    now[0] += 59.9
    assert state.token_valid(token)
    now[0] += 0.1
    assert not state.token_valid(token)
    assert not state.token_valid("never-issued")


# --- 401 / 400 / 422 -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_kci_without_a_valid_token_is_401(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body], token: str | None
) -> None:
    response = send(client, gw, provide[0], token)
    assert_error(response, 401, "NOT_AUTHORISED")
    assert gw.state.stats()["rejected"]["401"] == 1
    assert gw.state.timeline("TENANT1:1001") == []


def test_expired_tokens_are_401_and_a_new_token_works(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    expired = client.post(gw.root_url + "/_sandbox/expire-tokens")
    assert expired.json() == {"expired": 1}
    assert_error(send(client, gw, provide[0], token), 401, "NOT_AUTHORISED")
    assert send(client, gw, provide[0], get_token(client, gw)).status_code == 204


def test_kci_without_x_request_id_is_400(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    response = send(client, gw, provide[0], get_token(client, gw), request_id=False)
    messages = assert_error(response, 400, "MALFORMED_REQUEST")
    assert "X-Request-ID" in messages[0]
    assert gw.state.stats()["rejected"]["400"] == 1


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_400(
    gw: SandboxHandle, client: httpx.Client, raw: bytes
) -> None:
    assert_error(send(client, gw, raw, get_token(client, gw)), 400, "MALFORMED_REQUEST")


def test_delay_without_problem_code_is_422_naming_it(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    for body in provide[:3]:
        assert send(client, gw, body, token).status_code == 204
    delay = provide[3]
    assert delay["reasonCode"] == "DELAY"
    del delay["problemCode"]
    messages = assert_error(send(client, gw, delay, token), 422, "INVALID_REQUEST")
    assert messages == ["problemCode: a DELAY KCI must carry a problemCode"]
    assert gw.state.stats()["rejected"]["422"] == 1
    assert gw.state.stats()["violations"] == 0
    assert len(gw.state.timeline("TENANT1:1001")) == 3


def test_422_has_one_message_per_field_error(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    body = {**provide[0], "id": "nope", "sequenceNumber": 0}
    messages = assert_error(send(client, gw, body, get_token(client, gw)), 422, "INVALID_REQUEST")
    assert len(messages) == 2
    assert messages[0].startswith("id: ")
    assert messages[1].startswith("sequenceNumber: ")


# --- Sequencing ----------------------------------------------------------------------------------


def test_valid_sequence_is_204_without_body_and_kept_as_the_timeline(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    for body in provide:
        response = send(client, gw, body, token)
        assert response.status_code == 204
        assert response.content == b""
    timeline = client.get(gw.root_url + "/_sandbox/orders/TENANT1:1001")
    assert timeline.json() == provide
    stats = client.get(gw.root_url + "/_sandbox/stats").json()
    assert stats["accepted"] == len(provide) == 11
    assert stats["orders"] == 1
    assert stats["violations"] == 0
    assert client.get(gw.root_url + "/_sandbox/orders").json() == {"TENANT1:1001": 11}


def test_every_demo_lifecycle_is_accepted_under_its_order_key(
    gw: SandboxHandle, client: httpx.Client, played: list[Played]
) -> None:
    token = get_token(client, gw)
    for one in played:
        for kci in one.kcis:
            assert send(client, gw, kci.body, token).status_code == 204
        assert gw.state.timeline(one.order_id) == [k.body for k in one.kcis]
    stats = gw.state.stats()
    assert stats["accepted"] == sum(len(p.kcis) for p in played)
    assert stats["orders"] == len(played)


def test_orders_in_parallel_are_all_accepted(
    gw: SandboxHandle, client: httpx.Client, played: list[Played]
) -> None:
    token = get_token(client, gw)

    def deliver(one: Played) -> list[int]:
        with httpx.Client(timeout=5.0) as own:
            return [send(own, gw, kci.body, token).status_code for kci in one.kcis]

    with ThreadPoolExecutor(max_workers=len(played)) as pool:
        statuses = [s for result in pool.map(deliver, played) for s in result]
    assert set(statuses) == {204}
    assert gw.state.stats()["accepted"] == len(statuses)
    assert gw.state.stats()["violations"] == 0


def test_redelivery_of_the_same_body_is_204_and_counted(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    for body in provide[:2]:
        send(client, gw, body, token)
    again = json.dumps(provide[0], indent=2, sort_keys=True).encode()  # same JSON, other bytes
    assert send(client, gw, again, token).status_code == 204
    stats = gw.state.stats()
    assert (stats["accepted"], stats["redelivered"], stats["violations"]) == (2, 1, 0)
    assert gw.state.timeline("TENANT1:1001") == provide[:2]


def test_same_id_with_a_different_body_is_422(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    send(client, gw, provide[0], token)
    changed = copy.deepcopy(provide[0])
    changed["provideServiceOrder"]["notes"] = "changed"
    messages = assert_error(send(client, gw, changed, token), 422, "INVALID_REQUEST")
    assert "KCI id reused with a different body" in messages[0]
    assert gw.state.timeline("TENANT1:1001") == provide[:1]


def _gap(bodies: list[Body]) -> tuple[list[Body], Body]:
    return bodies[:1], bodies[2]


def _first_not_one(bodies: list[Body]) -> tuple[list[Body], Body]:
    return [], bodies[1]


def _duplicate_number(bodies: list[Body]) -> tuple[list[Body], Body]:
    return bodies[:2], {**bodies[2], "sequenceNumber": 2}


def _issued_backwards(bodies: list[Body]) -> tuple[list[Body], Body]:
    return bodies[:2], {**bodies[2], "issuedOn": "2026-11-23T08:00:00.000Z"}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (_gap, "sequenceNumber 3 leaves a gap (the last was 1, so the next is 2)"),
        (_first_not_one, "sequenceNumber 2 leaves a gap (the first KCI of an order is 1"),
        (_duplicate_number, "sequenceNumber 2 was already used by KCI"),
        (_issued_backwards, "issuedOn 2026-11-23T08:00:00.000Z is earlier than issuedOn"),
    ],
    ids=["gap", "first-not-1", "duplicate-number", "issued-backwards"],
)
def test_sequencing_breaches_are_422_and_violations(
    gw: SandboxHandle,
    client: httpx.Client,
    provide: list[Body],
    case: Callable[[list[Body]], tuple[list[Body], Body]],
    expected: str,
) -> None:
    token = get_token(client, gw)
    before, wrong = case(provide)
    for body in before:
        assert send(client, gw, body, token).status_code == 204
    messages = assert_error(send(client, gw, wrong, token), 422, "INVALID_REQUEST")
    assert messages[0].startswith("order TENANT1:1001: ")
    assert expected in messages[0]
    stats = gw.state.stats()
    assert (stats["violations"], stats["rejected"]["422"]) == (1, 1)
    assert gw.state.timeline("TENANT1:1001") == before


def test_order_key_follows_the_engines_order_ids(played: list[Played]) -> None:
    for one in played:
        for kci in one.kcis:
            assert order_key(kci.body) == one.order_id
    by_reference = {"ceaseServiceOrder": {"supplierOrderReference": "S-9", "tenant": "T"}}
    assert order_key(by_reference) == "S-9"
    unsolicited = {"unsolicitedCeaseServiceOrder": {"supplierOrderReference": "UC", "id": 4}}
    assert order_key({**unsolicited, "tenant": "T"}) == "UC"
    assert order_key({"modifyServiceOrder": {"id": 5, "status": "ACKNOWLEDGED"}}) == ":5"
    with pytest.raises(ValueError, match="identifies no order"):
        order_key({"provideServiceOrder": {"status": "ACKNOWLEDGED"}})


# --- Faults --------------------------------------------------------------------------------------


def test_5xx_fault_alternates_503_without_body_and_500_with_gateway_fault(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    assert set_faults(client, gw, rate=1.0, kinds=["5xx"], seed=1).status_code == 200
    first, second = send(client, gw, provide[0], token), send(client, gw, provide[0], token)
    assert first.status_code == 503
    assert first.content == b""
    assert_error(second, 500, "GATEWAY_FAULT")
    assert gw.state.stats()["faults"]["5xx"] == 2
    assert gw.state.timeline("TENANT1:1001") == []


def test_429_fault_says_retry_after(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    set_faults(client, gw, rate=1.0, kinds=["429"])
    response = send(client, gw, provide[0], token)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert gw.state.stats()["faults"]["429"] == 1
    assert gw.state.stats()["accepted"] == 0


def test_token_expiry_fault_is_401_and_the_token_stays_dead(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    set_faults(client, gw, rate=1.0, kinds=["token_expiry"])
    assert_error(send(client, gw, provide[0], token), 401, "NOT_AUTHORISED")
    set_faults(client, gw, rate=0.0)
    assert_error(send(client, gw, provide[0], token), 401, "NOT_AUTHORISED")
    assert send(client, gw, provide[0], get_token(client, gw)).status_code == 204
    stats = gw.state.stats()
    assert (stats["faults"]["token_expiry"], stats["rejected"]["401"]) == (1, 1)


def test_slow_fault_times_the_client_out_yet_accepts_so_the_retry_is_a_redelivery(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    set_faults(client, gw, rate=1.0, kinds=["slow"])
    with pytest.raises(httpx.TimeoutException):
        send(client, gw, provide[0], token, timeout=0.2)
    wait_for(lambda: gw.state.timeline("TENANT1:1001") == provide[:1])
    set_faults(client, gw, rate=0.0)
    assert send(client, gw, provide[0], token).status_code == 204
    stats = gw.state.stats()
    assert (stats["accepted"], stats["redelivered"], stats["faults"]["slow"]) == (1, 1, 1)


def test_drop_fault_accepts_then_drops_the_connection_without_an_answer(
    gw: SandboxHandle,
    client: httpx.Client,
    provide: list[Body],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = get_token(client, gw)
    assert send(client, gw, provide[0], token).status_code == 204  # a kept-alive connection
    set_faults(client, gw, rate=1.0, kinds=["drop"])
    with caplog.at_level(logging.INFO), pytest.raises(httpx.RemoteProtocolError) as dropped:
        send(client, gw, provide[1], token)
    assert "without sending a response" in str(dropped.value)
    assert gw.state.timeline("TENANT1:1001") == provide[:2]
    set_faults(client, gw, rate=0.0)
    assert send(client, gw, provide[1], token).status_code == 204
    stats = gw.state.stats()
    assert (stats["accepted"], stats["redelivered"], stats["faults"]["drop"]) == (2, 1, 1)
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]


def test_drop_without_a_way_to_drop_starts_an_answer_it_never_finishes() -> None:
    state = SandboxState(client_id="a", client_secret="b", faults=FaultPlan(1.0, ("drop",)))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def collect(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/kcis",
        "headers": [],
        "query_string": b"",
    }
    asyncio.run(create_app(state)(scope, receive, collect))
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert (b"content-length", b"1") in sent[0]["headers"]


def test_faults_follow_the_seed(gw: SandboxHandle, client: httpx.Client) -> None:
    token = get_token(client, gw)

    def statuses(seed: int) -> list[int]:
        set_faults(client, gw, rate=0.5, kinds=["5xx", "429"], seed=seed)
        return [send(client, gw, b"[]", token).status_code for _ in range(24)]

    first = statuses(7)
    assert statuses(7) == first
    assert statuses(8) != first
    assert {400, 429} <= set(first)
    assert {500, 503} & set(first)


def test_fault_injector_draws_reproducibly_from_the_enabled_kinds() -> None:
    def draws(plan: FaultPlan) -> list[FaultKind | None]:
        injector = FaultInjector(plan)
        return [injector.draw() for _ in range(200)]

    mixed = draws(FaultPlan(rate=0.3, seed=3))
    assert mixed == draws(FaultPlan(rate=0.3, seed=3))
    assert 30 < sum(d is not None for d in mixed) < 90
    assert {d for d in mixed if d} == set(ALL_FAULTS)
    assert set(draws(FaultPlan(rate=1.0, kinds=("drop",)))) == {FaultKind.DROP}
    assert set(draws(FaultPlan(rate=0.0))) == {None}


def test_fault_plan_endpoint_validates_and_reports(gw: SandboxHandle, client: httpx.Client) -> None:
    url = gw.root_url + "/_sandbox/faults"
    assert client.get(url).json() == FaultPlan(slow_seconds=0.6).to_json()
    assert_error(client.post(url, json={"rate": 1.5}), 422, "INVALID_REQUEST")
    assert_error(client.post(url, json={"kinds": ["fire"]}), 422, "INVALID_REQUEST")
    assert_error(client.post(url, json={"kinds": "drop"}), 422, "INVALID_REQUEST")
    assert_error(client.post(url, json={"speed": 1}), 422, "INVALID_REQUEST")
    assert_error(client.post(url, content=b"nope"), 400, "MALFORMED_REQUEST")
    assert_error(client.post(url, json=[1]), 400, "MALFORMED_REQUEST")
    plan = client.post(url, json={"rate": 0.25, "kinds": ["429", "drop"], "seed": 4}).json()
    assert plan == {"rate": 0.25, "kinds": ["429", "drop"], "seed": 4, "slow_seconds": 0.6}


# --- Control, stats, recording -------------------------------------------------------------------


def test_stats_shape_and_reset(
    gw: SandboxHandle, client: httpx.Client, provide: list[Body]
) -> None:
    token = get_token(client, gw)
    send(client, gw, provide[0], token)
    set_faults(client, gw, rate=1.0, kinds=["429"])
    stats = client.get(gw.root_url + "/_sandbox/stats").json()
    assert stats == {
        "accepted": 1,
        "redelivered": 0,
        "rejected": {"400": 0, "401": 0, "422": 0},
        "violations": 0,
        "faults": {"5xx": 0, "slow": 0, "429": 0, "token_expiry": 0, "drop": 0},
        "orders": 1,
        "tokens_issued": 1,
        "reloaded": 0,
    }
    assert client.post(gw.root_url + "/_sandbox/reset").status_code == 204
    assert client.get(gw.root_url + "/_sandbox/stats").json()["accepted"] == 0
    assert gw.state.timeline("TENANT1:1001") == []
    assert gw.state.fault_plan.rate == 0.0
    assert_error(send(client, gw, provide[0], token), 401, "NOT_AUTHORISED")


def test_unknown_path_and_method_use_the_error_shape(
    gw: SandboxHandle, client: httpx.Client
) -> None:
    assert_error(client.get(gw.base_url + "/service-orders"), 404, "NOT_FOUND")
    response = client.get(gw.kcis_url)
    assert_error(response, 405, "NOT_IMPLEMENTED")
    assert response.headers["allow"] == "POST"


def test_record_appends_first_acceptances_only_in_arrival_order(
    tmp_path: Path, played: list[Played]
) -> None:
    record = tmp_path / "accepted.jsonl"
    record.write_text('{"earlier":"run"}\n')
    provide, cease = played[0].kcis, played[4].kcis
    arrivals = [provide[0], cease[0], provide[1], provide[0], cease[0]]
    with running_sandbox(SandboxConfig(record=record)) as gw, httpx.Client() as client:
        token = get_token(client, gw)
        for kci in arrivals:
            assert send(client, gw, kci.body, token).status_code == 204
        assert_error(send(client, gw, provide[3].body, token), 422, "INVALID_REQUEST")
        lines = record.read_text().splitlines()  # flushed per line, while still running
    assert lines[0] == '{"earlier":"run"}'
    assert lines[1:] == [provide[0].json(), cease[0].json(), provide[1].json()]


# --- Configuration and the command ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
def test_non_loopback_host_is_refused_unless_allowed(host: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(host))):
        SandboxConfig(host=host)
    assert SandboxConfig(host=host, allow_remote=True).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_hosts_are_allowed(host: str) -> None:
    assert SandboxConfig(host=host).host == host


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fault_kinds": ["5xx", "fire"]}, "unknown fault kind 'fire'"),
        ({"fault_rate": 1.5}, "between 0 and 1"),
        ({"fault_rate": 0.5, "fault_kinds": []}, "at least one fault kind"),
        ({"token_ttl": 0}, "at least 1 second"),
        ({"port": 70000}, "between 0 and 65535"),
        ({"slow_seconds": -1}, "slow_seconds"),
        ({"client_secret": ""}, "must not be empty"),
    ],
)
def test_bad_settings_are_configuration_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        SandboxConfig(**settings)


def test_port_in_use_is_a_configuration_error(server: SandboxHandle) -> None:
    port = int(server.root_url.rsplit(":", 1)[1])
    with (
        pytest.raises(ConfigurationError, match="cannot listen"),
        running_sandbox(SandboxConfig(port=port)),
    ):
        pass  # pragma: no cover


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--host", "0.0.0.0"], "'0.0.0.0' is not loopback"), (["--faults", "fire"], "'fire'")],
)
def test_command_refuses_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(sandbox_command, args)
    assert result.exit_code == 1
    assert message in result.output


def test_command_serves_until_terminated(tmp_path: Path, played: list[Played]) -> None:
    record = tmp_path / "r.jsonl"
    env = {**os.environ, "KCI_SANDBOX_CLIENT_SECRET": "s3cret-from-env"}
    code = (
        "from kci_engine.tooling.sandbox.command import sandbox; "
        "sandbox(prog_name='kci-engine sandbox')"
    )
    args = ["--port", "0", "--record", str(record), "--seed", "3"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=20), "the command printed nothing"
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        base = match.group(1)
        with httpx.Client(timeout=5.0) as client:
            form = {"grant_type": "client_credentials"}
            denied = client.post(base + "/auth/supplier/access-token", data=form, auth=CLIENT)
            assert denied.json() == {"error": "invalid_client"}
            auth = (CLIENT[0], "s3cret-from-env")
            token = client.post(base + "/auth/supplier/access-token", data=form, auth=auth)
            headers = {
                "Authorization": f"Bearer {token.json()['access_token']}",
                "X-Request-ID": "r-1",
            }
            kci = played[0].kcis[0]
            response = client.post(base + "/kcis", content=kci.json(), headers=headers)
            assert response.status_code == 204
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "s3cret" not in line + out + err
    assert "stopped" in err
    assert record.read_text() == kci.json() + "\n"


def test_record_file_that_cannot_be_opened_is_a_configuration_error(tmp_path: Path) -> None:
    config = SandboxConfig(record=tmp_path / "missing" / "r.jsonl")
    with (
        pytest.raises(ConfigurationError, match="cannot open the record file"),
        running_sandbox(config),
    ):
        pass  # pragma: no cover


def test_command_in_process_stops_cleanly_on_sigterm(played: list[Played]) -> None:
    """The command's own signal handling: SIGTERM ends it with status 0 after a clean stop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    answers: list[int] = []

    def deliver_then_terminate() -> None:
        with httpx.Client(timeout=5.0) as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    response = client.post(
                        base + "/auth/supplier/access-token",
                        data={"grant_type": "client_credentials"},
                        auth=CLIENT,
                    )
                except httpx.TransportError:
                    time.sleep(0.02)
                    continue
                answers.append(response.status_code)
                break
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=deliver_then_terminate)
    helper.start()
    result = CliRunner().invoke(sandbox_command, ["--port", str(port)])
    helper.join()
    assert answers == [200]
    assert result.exit_code == 0, result.output
    assert f"sandbox gateway: {base}" in result.output
    assert "stopped" in result.output


# --- a real gateway's pace, and restarts ---------------------------------------------------------


def _two_kci_bodies() -> list[str]:
    from kci_engine import Engine, Event
    from kci_engine.tooling.testing import COMMIT_DATES, provide_order

    engine = Engine()
    order_id = engine.accept_order("provide", provide_order(7))
    first = engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}})
    second = engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
    return [kci.json() for kci in (*first, *second)]


def test_a_restarted_sandbox_remembers_what_it_accepted(tmp_path: Path) -> None:
    """The record file is read back: after a restart the order's next KCI is accepted (not a
    422 "leaves a gap") and the first one sent again is a redelivery."""
    from kci_engine.delivery.client import GatewayClient

    record = tmp_path / "received.jsonl"
    one, two = _two_kci_bodies()
    with running_sandbox(SandboxConfig(record=record)) as gateway:
        client = GatewayClient(gateway.base_url, "sandbox-client", "sandbox-secret")
        assert client.send(one, "c").outcome.value == "DELIVERED"
        client.close()
    with running_sandbox(SandboxConfig(record=record)) as gateway:
        client = GatewayClient(gateway.base_url, "sandbox-client", "sandbox-secret")
        assert client.send(two, "c").outcome.value == "DELIVERED"
        assert client.send(one, "c").outcome.value == "DELIVERED"
        client.close()
        [key] = gateway.state.orders()
        assert [b["sequenceNumber"] for b in gateway.state.timeline(key)] == [1, 2]
        assert gateway.state.stats()["redelivered"] == 1
        assert gateway.state.stats()["violations"] == 0
    assert len(record.read_text().splitlines()) == 2


def _three_kci_bodies() -> list[str]:
    """An order's first three KCIs; the third has text beyond ASCII, as a KCI body may."""
    from kci_engine import Engine, Event
    from kci_engine.tooling.testing import COMMIT_DATES, provide_order

    engine = Engine()
    order_id = engine.accept_order("provide", provide_order(8))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}})
    engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
    engine.apply(order_id, Event.WARN, {"problem_code": "NETWORK_ISSUE", "text": "Café wayleave"})
    return [kci.json() for kci in engine.kcis(order_id)]


def _submit(state: SandboxState, body: str) -> str:
    from kci_engine.orders import parse_kci

    return state.submit(json.loads(body), parse_kci(body)).verdict.value


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda line: line[: len(line) // 2], id="half-a-line"),
        pytest.param(lambda line: line[: line.index(b"\xc3") + 1], id="half-a-character"),
    ],
)
def test_a_line_cut_short_by_a_kill_is_cut_off_and_what_follows_is_kept(
    tmp_path: Path, cut: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A sandbox SIGKILLed while it writes a record line leaves the line unfinished. That KCI was
    never answered (the 204 goes out after the line is flushed), so a restarted sandbox cuts the
    fragment off and takes the KCI as new when it comes again, on a line of its own: a second
    restart remembers every KCI, once. (The fragment used to stay, the next acceptance was
    appended to it, and the next restart forgot that one; a cut UTF-8 character stopped the
    sandbox from starting at all.)"""
    record = tmp_path / "received.jsonl"
    one, two, three = _three_kci_bodies()
    record.write_bytes(f"{one}\n{two}\n".encode() + cut(three.encode()))
    state = SandboxState(client_id=CLIENT[0], client_secret=CLIENT[1], record=record)
    assert state.stats()["reloaded"] == 2
    assert _submit(state, three) == "accepted"
    state.close()
    assert "cut off an unfinished last line" in caplog.text
    assert record.read_text(encoding="utf-8").splitlines() == [one, two, three]
    again = SandboxState(client_id=CLIENT[0], client_secret=CLIENT[1], record=record)
    assert again.stats()["reloaded"] == 3
    assert _submit(again, three) == "redelivered"
    again.close()


def test_a_whole_last_line_without_its_newline_is_taken_back_and_ended(tmp_path: Path) -> None:
    """Killed after a KCI's last byte but before its newline: the KCI is whole, so it is taken
    back (its sender, which got no answer, sends it again and gets a redelivery), and the line is
    ended before the next one is appended."""
    record = tmp_path / "received.jsonl"
    one, two, three = _three_kci_bodies()
    record.write_text(f"{one}\n{two}", encoding="utf-8")
    state = SandboxState(client_id=CLIENT[0], client_secret=CLIENT[1], record=record)
    assert state.stats()["reloaded"] == 2
    assert _submit(state, two) == "redelivered"
    assert _submit(state, three) == "accepted"
    state.close()
    assert record.read_text(encoding="utf-8").splitlines() == [one, two, three]


def test_record_lines_that_are_not_kci_bodies_are_not_taken_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = tmp_path / "received.jsonl"
    record.write_text('{"not": "a kci"}\n')
    with running_sandbox(SandboxConfig(record=record)) as gateway:
        assert gateway.state.orders() == {}
    assert "received.jsonl: 1 line(s) are not KCI bodies" in caplog.text


def test_the_sandbox_answers_at_the_pace_it_is_given() -> None:
    one, _ = _two_kci_bodies()
    paced = SandboxConfig(latency_ms=300, jitter_ms=50)
    with running_sandbox(paced) as gateway, httpx.Client() as http:
        token = http.post(
            gateway.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": "sandbox-client",
                "client_secret": "sandbox-secret",
            },
        ).json()["access_token"]
        began = time.monotonic()
        answer = http.post(
            gateway.kcis_url,
            content=one,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "X-Request-ID": str(uuid.uuid4()),
                "X-Conversation-ID": str(uuid.uuid4()),
            },
        )
        took = time.monotonic() - began
    assert answer.status_code == 204
    assert took >= 0.25  # 300 ms give or take 50: the pace is applied, not a speed target


@pytest.mark.parametrize(
    ("setting", "value"), [("latency_ms", -1), ("jitter_ms", float("nan")), ("latency_ms", 1e9)]
)
def test_pace_settings_are_bounded(setting: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        SandboxConfig(**{setting: value})  # type: ignore[arg-type]
