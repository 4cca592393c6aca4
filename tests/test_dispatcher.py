"""Dispatcher policy on a real SQLite outbox with a scripted gateway (httpx.MockTransport):
order per order, parking on rejection, retries and horizon, stopping on bad credentials."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable

import httpx
import pytest
from kci_engine import Engine, Event
from kci_engine.delivery.client import GatewayClient
from kci_engine.delivery.dispatcher import Dispatcher
from kci_engine.delivery.policy import RetryPolicy
from kci_engine.errors import CredentialsRejected
from kci_engine.store.outbox import Outbox
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

Answer = Callable[[dict[str, object]], httpx.Response]


class Gateway:
    """A scripted gateway: records what arrived per order, answers via ``answer(body)``."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or (lambda body: httpx.Response(204))
        self.received: dict[str, list[int]] = defaultdict(list)
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("access-token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        import json

        body = json.loads(request.content)
        response = self.answer(body)
        if response.status_code == 204:
            order = body["provideServiceOrder"]
            with self.lock:
                self.received[f"{order['tenant']}:{order['id']}"].append(body["sequenceNumber"])
        return response


def _setup(url: str, orders: int = 3) -> tuple[SqlStore, list[str]]:
    store = SqlStore(url)
    engine = Engine(store)
    ids = []
    for n in range(1, orders + 1):
        order_id = engine.accept_order("provide", provide_order(n))
        engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"S{n}"}})
        engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        engine.apply(order_id, Event.WARN, {"problem_code": "NETWORK_ISSUE"})
        ids.append(order_id)
    return store, ids


def _dispatcher(store: SqlStore, gateway: Gateway, **kwargs: object) -> Dispatcher:
    client = GatewayClient(
        "https://gw.example/v1", "c", "s", transport=httpx.MockTransport(gateway)
    )
    policy = RetryPolicy(base_s=0.01, cap_s=0.05, horizon_s=60, rng=random.Random(7))
    return Dispatcher(store, client, policy=policy, concurrency=4, poll_s=0.01, **kwargs)


def test_everything_is_delivered_in_sequence_per_order(sqlite_url: str) -> None:
    store, ids = _setup(sqlite_url, 6)
    gateway = Gateway()
    stats = _dispatcher(store, gateway).run(idle_exit=True)
    assert stats.delivered == 18
    assert dict(gateway.received.items()) == {i: [1, 2, 3] for i in ids}
    assert store.outbox_status()["counts"] == {"PENDING": 0, "DELIVERED": 18, "DEAD": 0}
    assert all(e.attempts == 1 for e in store.outbox(ids[0]))


def test_a_rejected_kci_parks_its_order_only(sqlite_url: str) -> None:
    store, ids = _setup(sqlite_url, 3)

    def answer(body: dict[str, object]) -> httpx.Response:
        order = body["provideServiceOrder"]
        if order["id"] == 2 and body["sequenceNumber"] == 2:  # type: ignore[index]
            return httpx.Response(
                422, json={"uuid": "e-9", "code": "INVALID_REQUEST", "messages": ["no"]}
            )
        return httpx.Response(204)

    gateway = Gateway(answer)
    stats = _dispatcher(store, gateway).run(idle_exit=True)
    assert stats.dead == 1
    assert gateway.received[ids[0]] == [1, 2, 3]
    assert gateway.received[ids[2]] == [1, 2, 3]
    assert gateway.received[ids[1]] == [1]  # 2 is parked, 3 waits behind it
    outbox = Outbox(store)
    [dead] = outbox.dead_letters()
    assert (dead.order_id, dead.sequence_number, dead.waiting) == (ids[1], 2, 1)
    assert "INVALID_REQUEST (uuid e-9): no" in (dead.last_error or "")
    # The operator fixes the cause and re-queues: the order resumes in sequence.
    gateway.answer = lambda body: httpx.Response(204)
    assert outbox.requeue(ids[1]) == 1
    _dispatcher(store, gateway).run(idle_exit=True)
    assert gateway.received[ids[1]] == [1, 2, 3]
    assert outbox.dead_letters() == []


def test_retryable_failures_are_retried_with_the_same_body(sqlite_url: str) -> None:
    store, ids = _setup(sqlite_url, 2)
    bodies: dict[str, set[str]] = defaultdict(set)
    failures = iter([503, 500, 429, 502] * 3)

    def answer(body: dict[str, object]) -> httpx.Response:
        import json

        bodies[str(body["id"])].add(json.dumps(body, sort_keys=True))
        code = next(failures, 204)
        return httpx.Response(code, headers={"Retry-After": "0"} if code == 429 else {})

    gateway = Gateway(answer)
    stats = _dispatcher(store, gateway).run(idle_exit=True)
    assert stats.delivered == 6
    assert stats.retried == 12
    assert all(len(seen) == 1 for seen in bodies.values())  # a retry resends the same body
    assert dict(gateway.received.items()) == {i: [1, 2, 3] for i in ids}


def test_past_the_horizon_a_kci_is_dead_lettered(sqlite_url: str) -> None:
    store, _ids = _setup(sqlite_url, 1)
    dispatcher = _dispatcher(store, Gateway(lambda body: httpx.Response(503)))
    dispatcher.policy = RetryPolicy(base_s=0.01, cap_s=0.01, horizon_s=0.05)
    stats = dispatcher.run(idle_exit=True)
    assert stats.dead == 1
    [dead] = Outbox(store).dead_letters()
    assert dead.last_error is not None
    assert dead.last_error.startswith("gave up after the retry horizon")


def test_a_refused_token_is_retried_and_delivery_goes_on(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """401 after a fresh token (or 403) does not stop the dispatcher: the KCI waits with
    backoff, the state is said loudly once, and delivery resumes when the gateway relents."""
    store, ids = _setup(sqlite_url, 2)
    refusals = iter(range(6))

    def answer(body: dict[str, object]) -> httpx.Response:
        if next(refusals, None) is not None:
            return httpx.Response(
                401, json={"uuid": "u", "code": "NOT_AUTHORISED", "messages": ["bad"]}
            )
        return httpx.Response(204)

    gateway = Gateway(answer)
    stats = _dispatcher(store, gateway).run(idle_exit=True)
    assert stats.delivered == 6
    assert stats.stopped_by is None
    assert dict(gateway.received.items()) == {i: [1, 2, 3] for i in ids}
    refused = [r for r in caplog.records if "refuses this client's token" in r.getMessage()]
    assert len(refused) == 1


def test_credentials_the_token_endpoint_refuses_stop_delivery_and_lose_nothing(
    sqlite_url: str,
) -> None:
    store, ids = _setup(sqlite_url, 2)

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("access-token"):
            return httpx.Response(401, json={"error": "invalid_client"})
        return httpx.Response(204)

    client = GatewayClient("https://gw.example/v1", "c", "s", transport=httpx.MockTransport(route))
    dispatcher = Dispatcher(store, client, concurrency=4, poll_s=0.01)
    with pytest.raises(CredentialsRejected, match="invalid_client"):
        dispatcher.run(idle_exit=True)
    assert store.outbox_status()["counts"] == {"PENDING": 6, "DELIVERED": 0, "DEAD": 0}
    assert all(e.attempts == 0 for i in ids for e in store.outbox(i))
    noted = [e.last_error for i in ids for e in store.outbox(i) if e.last_error]
    assert noted
    assert "invalid_client" in noted[0]


def test_a_lease_held_by_another_dispatcher_is_respected(sqlite_url: str) -> None:
    store, ids = _setup(sqlite_url, 2)
    outbox = Outbox(store)
    assert outbox.claim(ids[0], "other-worker", lease_s=60)
    gateway = Gateway()
    _dispatcher(store, gateway).run(
        until=lambda: sum(len(v) for v in gateway.received.values()) >= 3
    )
    assert ids[0] not in gateway.received
    assert gateway.received[ids[1]] == [1, 2, 3]
    assert not outbox.claim(ids[0], "me", lease_s=60)
    outbox.release(ids[0], "other-worker")
    assert outbox.claim(ids[0], "me", lease_s=60)


def test_stop_lets_requests_in_flight_finish(sqlite_url: str) -> None:
    store, _ids = _setup(sqlite_url, 4)
    dispatcher: Dispatcher | None = None

    def answer(body: dict[str, object]) -> httpx.Response:
        assert dispatcher is not None
        dispatcher.stop()  # SIGTERM arrives while this request is in flight
        return httpx.Response(204)

    dispatcher = _dispatcher(store, Gateway(answer))
    stats = dispatcher.run()
    counts = store.outbox_status()["counts"]
    assert stats.delivered == counts["DELIVERED"] >= 1
    assert counts["PENDING"] + counts["DELIVERED"] == 12
    assert all(lease is None for lease in _lease_owners(store))


def _lease_owners(store: SqlStore) -> list[object]:
    from kci_engine.store.tables import LEASES

    with store.db.connect() as conn:
        return [row.owner for row in conn.execute(LEASES.select())]
