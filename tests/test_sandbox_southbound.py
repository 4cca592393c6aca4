"""The sandbox playing the gateway's southbound side against a real supplier: the Supplier API
(uvicorn on 127.0.0.1, SQLite), its back office answering the 202s, the dispatcher delivering
the KCIs to the sandbox, and the sandbox checking every answer against the KCIs that came back.
Then the checker against suppliers that break the contract."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from kci_engine import Engine
from kci_engine.delivery.client import GatewayClient
from kci_engine.delivery.dispatcher import Dispatcher
from kci_engine.delivery.policy import RetryPolicy
from kci_engine.errors import ConfigurationError
from kci_engine.inbound import BearerTokens, ServeConfig, SupplierApi, running_server
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.demo_supplier import DemoLogic, answer_owed, running_supplier
from kci_engine.tooling.sandbox import SandboxConfig, running_sandbox
from kci_engine.tooling.sandbox.southbound import Sent, Southbound

TOKEN = "southbound-token"


def test_a_supplier_on_the_engine_passes_the_southbound_checks(sqlite_url: str) -> None:
    with (
        SqlStore(sqlite_url) as store,
        running_sandbox(SandboxConfig()) as gateway,
        running_server(
            SupplierApi(Engine(store), DemoLogic()),
            ServeConfig(port=0, auth=BearerTokens([TOKEN])),
        ) as supplier,
    ):
        southbound = Southbound(
            supplier.base_url,
            orders=25,
            amend_rate=0.6,
            cancel_rate=0.4,
            seed=3,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with httpx.Client(timeout=30) as client:
            sent = southbound.place(client)
        while answer_owed(supplier.api):  # the back office works through the 202s
            pass
        problems, owed = southbound.check(sent, gateway.state.timeline)
        assert problems == []
        assert len(owed) > 0  # owed KCIs written but not yet delivered to the gateway
        client = GatewayClient(gateway.base_url, "sandbox-client", "sandbox-secret")
        try:
            policy = RetryPolicy(base_s=0.01, cap_s=0.1, horizon_s=60, rng=random.Random(1))
            Dispatcher(store, client, policy=policy, poll_s=0.01).run(idle_exit=True)
        finally:
            client.close()
        problems, owed = southbound.check(sent, gateway.state.timeline)
        assert (problems, owed) == ([], [])
        statuses = {(s.kind, s.status) for s in sent}
        assert {("order", 201), ("order", 202), ("order", 422)} <= statuses
        assert {("amendment", 201), ("amendment", 202), ("amendment", 422)} <= statuses
        assert {("cancellation", 201), ("cancellation", 202)} <= statuses
        assert gateway.state.stats()["violations"] == 0


def _timeline(kcis: dict[str, list[dict[str, Any]]]) -> Any:
    return lambda key: kcis.get(key, [])


def _kci(reason: str, **order: Any) -> dict[str, Any]:
    return {"reasonCode": reason, "provideServiceOrder": {"id": 1, "tenant": "TENANT1", **order}}


@pytest.mark.parametrize(
    ("sent", "kcis", "problem"),
    [
        (
            Sent("order", 1, 1, 201, {"status": "IN_PROGRESS"}),
            [_kci("COMMITTED")],
            "order 1 (order 1): answered 201 IN_PROGRESS, then sent COMMITTED it replaced",
        ),
        (
            Sent("order", 1, 1, 201, {"status": "ACKNOWLEDGED"}),
            [_kci("ACKNOWLEDGED")],
            "order 1 (order 1): answered 201 ACKNOWLEDGED, then sent ACKNOWLEDGED it replaced",
        ),
        (
            Sent("order", 1, 1, 202, None),
            [_kci("WARNING")],
            "order 1 (order 1): answered 202, but its first KCI is WARNING",
        ),
        (
            Sent("order", 1, 1, 422, {"code": "INVALID_REQUEST"}),
            [_kci("ACKNOWLEDGED")],
            "order 1 (order 1): answered 422, yet KCIs followed: ['ACKNOWLEDGED']",
        ),
        (
            Sent("cancellation", 7, 1, 201, {"supplierReference": "C"}),
            [_kci("ACKNOWLEDGED"), _kci("CANCELLED", serviceOrderCancellationId=7)],
            "cancellation 7 (order 1): answered 201, yet KCIs named it: ['CANCELLED']",
        ),
        (
            Sent("amendment", 5, 1, 201, {"supplierReference": "A"}),
            [_kci("ACKNOWLEDGED"), _kci("AMENDED", serviceOrderAmendmentId=5)],
            "amendment 5 (order 1): answered 201, yet KCIs named it: ['AMENDED']",
        ),
        (
            Sent("amendment", 5, 1, 202, None),
            [_kci("ACKNOWLEDGED"), _kci("CANCELLED", serviceOrderAmendmentId=5)],
            "amendment 5 (order 1): answered 202, but the KCI naming it is CANCELLED",
        ),
    ],
)
def test_the_checks_catch_a_supplier_that_breaks_the_contract(
    sent: Sent, kcis: list[dict[str, Any]], problem: str
) -> None:
    southbound = Southbound("http://127.0.0.1:1", orders=1)
    problems, owed = southbound.check([sent], _timeline({"TENANT1:1": kcis}))
    assert problem in problems
    assert owed == []


def test_a_202_whose_kci_never_comes_is_owed() -> None:
    southbound = Southbound("http://127.0.0.1:1", orders=1)
    sent = [Sent("order", 1, 1, 202, None), Sent("cancellation", 9, 1, 202, None)]
    problems, owed = southbound.check(sent, _timeline({}))
    assert problems == []
    assert owed == [
        "order 1 (order 1): answered 202, owes ACKNOWLEDGED or ORDER_REJECTED",
        "cancellation 9 (order 1): answered 202, owes CANCELLATION_REJECTED or CANCELLED",
    ]


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="orders"):
        Southbound("http://x", orders=0)
    with pytest.raises(ConfigurationError, match="amend_rate"):
        Southbound("http://x", orders=1, amend_rate=1.5)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_sandbox_command_plays_the_gateway_against_a_running_supplier(
    sqlite_url: str,
) -> None:
    """`kci-engine sandbox --supplier-url`: the supplier runs on its own (its API, a back office
    answering the 202s, its dispatcher delivering to the sandbox's port) while the command places
    orders and waits for every KCI owed."""
    from click.testing import CliRunner
    from kci_engine.cli import main

    port = _free_port()
    with (
        SqlStore(sqlite_url) as store,
        running_supplier(store, token=TOKEN, gateway_url=f"http://127.0.0.1:{port}/v1") as supplier,
    ):
        result = CliRunner().invoke(
            main,
            [
                "sandbox", "--port", str(port), "--supplier-url", supplier.base_url,
                "--orders", "15", "--amend-rate", "0.5", "--cancel-rate", "0.4",
                "--supplier-token", TOKEN, "--wait", "60",
            ],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no disagreements; every KCI owed arrived" in result.output
    assert "order 202 x" in result.output
    assert "order 422 x" in result.output


def test_the_sandbox_command_fails_on_a_supplier_that_never_answers_its_202s(
    sqlite_url: str,
) -> None:
    from click.testing import CliRunner
    from kci_engine.cli import main

    # A supplier whose back office never runs: built by hand, without running_supplier.
    with (
        SqlStore(sqlite_url) as store,
        running_server(
            SupplierApi(Engine(store), DemoLogic()),
            ServeConfig(port=0, auth=BearerTokens([TOKEN])),
        ) as supplier,
    ):
        result = CliRunner().invoke(
            main,
            [
                "sandbox", "--port", "0", "--supplier-url", supplier.base_url, "--orders", "4",
                "--supplier-token", TOKEN, "--wait", "0.5",
            ],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "NEVER CAME order 3 (order 3): answered 202, owes ACKNOWLEDGED" in result.output


def test_an_order_that_ended_owes_nothing_more() -> None:
    southbound = Southbound("http://127.0.0.1:1", orders=1)
    sent = [
        Sent("order", 1, 1, 202, None),
        Sent("amendment", 5, 1, 422, None),
        Sent("cancellation", 9, 1, 201, {"supplierReference": "C"}),
        Sent("order", 2, 2, 201, {"status": "ACKNOWLEDGED"}),
        Sent("amendment", 6, 2, 202, None),
    ]
    ended = {"TENANT1:2": [_kci("CANCELLED", id=2)]}  # the supplier cancelled order 2 itself
    assert southbound.check(sent, _timeline(ended)) == ([], [])
