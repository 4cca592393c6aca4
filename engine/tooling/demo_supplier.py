"""A demonstration supplier: logic that answers some requests 201, some 202 and some 422, and
a back office that later sends every KCI the 202s owe. The demo's round trip and the sandbox's
southbound tests run it behind ``kci-engine serve``'s app."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .._facade import Engine
from ..core.events import Event
from ..errors import ConcurrencyConflict
from ..inbound.decisions import (
    Acknowledge,
    AmendmentRequest,
    Apply,
    CancellationRequest,
    Commit,
    Later,
    OrderDecision,
    OrderRequest,
    Reject,
    RequestDecision,
)
from ..inbound.service import SupplierApi
from ..store.inbound import AMENDMENT, ORDER, Owed
from ..store.sql import SqlStore


class DemoLogic:
    """Answers by the gateway id, so a run is reproducible: of every five orders one is
    acknowledged at once, one committed at once, one refused (not in coverage) and two answered
    later; amendments with an even id are applied at once where the status allows it;
    cancellations with an odd id are applied at once."""

    def decide_order(self, request: OrderRequest) -> OrderDecision:
        reference = f"SUP-{request.gateway_id}"
        match request.gateway_id % 5:
            case 0:
                return Acknowledge(reference)
            case 1:
                date = _fortnight_ahead()  # a promise in the future, as a supplier makes one
                return Commit(reference, date, date)
            case 2:
                return Reject(f"UPRN of order {request.gateway_id} is not within our coverage area")
            case _:
                return Later()

    def decide_amendment(self, request: AmendmentRequest) -> RequestDecision:
        if request.gateway_id % 2 == 0 and request.can_apply_now:
            return Apply(f"AMD-{request.gateway_id}")
        return Later()

    def decide_cancellation(self, request: CancellationRequest) -> RequestDecision:
        if request.gateway_id % 2 == 1:
            return Apply(f"CAN-{request.gateway_id}")
        return Later()


def _fortnight_ahead() -> str:
    """08:00 UTC fourteen days from now, on the wire (``2026-12-17T08:00:00.000Z``)."""
    day = datetime.now(UTC).date() + timedelta(days=14)
    return f"{day.isoformat()}T08:00:00.000Z"


def answer_owed(api: SupplierApi) -> int:
    """The back office: send every KCI the 202 answers owe (acknowledge the orders, accept the
    amendments and cancellations). Returns how many debts it paid.

    A create overtaken by a cancellation is settled by the cancellation's answer. A debt whose
    order the API changed meanwhile (a request answered at the same moment) is left for the next
    round, which reads the order again.
    """
    paid = 0
    for owed in api.owed():
        try:
            paid += _pay(api, owed)
        except ConcurrencyConflict:
            continue
    return paid


def _pay(api: SupplierApi, owed: Owed) -> int:
    engine: Engine = api.engine
    if owed.kind == ORDER:
        if Event.ACKNOWLEDGE not in engine.allowed_events(owed.order_id):
            return 0
        reference = {"supplierOrderReference": f"SUP-{owed.gateway_id}"}
        engine.apply(owed.order_id, Event.ACKNOWLEDGE, {"order": reference})
    elif owed.kind == AMENDMENT:
        api.accept_amendment(owed.tenant, owed.gateway_id)  # the changes it asked for
    else:
        engine.apply(
            owed.order_id,
            Event.ACCEPT_CANCELLATION,
            {"cancellation_id": owed.gateway_id, "problem_code": "CUSTOMER_CHANGED_MIND"},
        )
    return 1


@dataclass(frozen=True)
class RunningSupplier:
    """A demonstration supplier at work: its Supplier API at ``base_url``, answered by
    :class:`DemoLogic`; a back office paying the 202s' debts; a dispatcher delivering the KCIs."""

    base_url: str
    api: SupplierApi


@contextmanager
def running_supplier(
    store: SqlStore,
    *,
    token: str,
    gateway_url: str | None = None,
    client_id: str = "sandbox-client",
    client_secret: str = "sandbox-secret",
    seed: int = 0,
    back_office: bool = True,
) -> Iterator[RunningSupplier]:
    """Run a demonstration supplier on ``store`` for the length of the ``with`` block: the
    Supplier API on 127.0.0.1 (bearer ``token``), its back office (unless ``back_office`` is
    false: the caller runs :func:`answer_owed` itself), and (with ``gateway_url``) a dispatcher
    delivering to that Supplier Updates API.

    Raises:
        EngineError: the server could not start.
    """
    from ..delivery.client import GatewayClient
    from ..delivery.dispatcher import Dispatcher
    from ..delivery.policy import RetryPolicy
    from ..inbound.auth import BearerTokens
    from ..inbound.server import ServeConfig, running_server

    api = SupplierApi(Engine(store), DemoLogic())
    stop = threading.Event()

    def work() -> None:
        while not stop.wait(0.02):
            answer_owed(api)

    with running_server(api, ServeConfig(port=0, auth=BearerTokens([token]))) as server:
        workers = (
            [threading.Thread(target=work, name="kci-demo-back-office")] if back_office else []
        )
        client = dispatcher = None
        if gateway_url is not None:
            client = GatewayClient(gateway_url, client_id, client_secret, timeout_s=5)
            policy = RetryPolicy(base_s=0.01, cap_s=0.2, horizon_s=600, rng=random.Random(seed))
            dispatcher = Dispatcher(store, client, policy=policy, concurrency=4, poll_s=0.02)
            workers.append(threading.Thread(target=dispatcher.run, name="kci-demo-dispatcher"))
        for worker in workers:
            worker.start()
        try:
            yield RunningSupplier(server.base_url, api)
        finally:
            stop.set()
            if dispatcher is not None:
                dispatcher.stop()
            for worker in workers:
                worker.join(30)
            if client is not None:
                client.close()
