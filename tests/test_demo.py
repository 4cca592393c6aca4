"""The demo: every order type, all 18 reason codes, every body valid, sequences gapless."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from click.testing import CliRunner
from kci_engine.cli import main
from kci_engine.core.codes import OrderType, ReasonCode
from kci_engine.orders import SPECS, parse_kci
from kci_engine.tooling.demo import ROUND_TRIP_TENANT, SAMPLES, play, run_demo
from kci_engine.tooling.testing import assert_valid_stream, test_engine


def test_samples_cover_every_order_type_and_reason_code() -> None:
    played = list(play(test_engine()))
    assert {p.sample.order_type for p in played} == set(OrderType)
    sent = {k.reason_code for p in played for k in p.kcis}
    assert sent == set(ReasonCode)
    for one in played:
        assert_valid_stream(one.kcis)


def test_demo_jsonl_holds_valid_bodies_numbered_per_order(tmp_path: Path) -> None:
    out = tmp_path / "kcis.jsonl"
    result = CliRunner().invoke(main, ["demo", "--jsonl", str(out)])
    assert result.exit_code == 0, result.output
    assert "18 of 18 reason codes" in result.output
    per_order: dict[str, list[dict[str, object]]] = defaultdict(list)
    for line in out.read_text().splitlines():
        body = json.loads(line)
        parse_kci(body)
        prop = next(p for p in [s.kci_property for s in SPECS.values()] if p in body)
        order = body[prop]
        per_order[
            f"{order.get('tenant')}:{order.get('id') or order['supplierOrderReference']}"
        ].append(body)
    samples = {k for k in per_order if not k.startswith(f"{ROUND_TRIP_TENANT}:")}
    assert len(samples) == len(SAMPLES)
    assert len(per_order) > len(samples)  # the round trip's orders answered 202 got their KCIs
    for bodies in per_order.values():
        assert [b["sequenceNumber"] for b in bodies] == list(range(1, len(bodies) + 1))
        issued = [b["issuedOn"] for b in bodies]
        assert issued == sorted(issued)


def test_demo_reports_unwritable_jsonl(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--jsonl", str(tmp_path / "missing" / "x.jsonl")])
    assert result.exit_code != 0
    assert "cannot write" in result.output


def test_the_demo_round_trip_agrees_with_the_kcis_that_came_back(sqlite_url: str) -> None:
    """The sandbox placed orders over HTTP on the Supplier API; the demo logic answered some
    201, some 202, some 422; every KCI a 202 owed reached the sandbox, none that a 201 replaced."""
    run = run_demo(sqlite_url, fault_rate=0.2, seed=11)
    trip = run.round_trip
    assert trip is not None
    assert (trip.problems, trip.owed_left) == ([], [])
    statuses = {(s.kind, s.status) for s in trip.sent}
    assert {("order", 201), ("order", 202), ("order", 422)} <= statuses
    assert set(run.delivered.values()) == {"DELIVERED"}
    owed_kcis = [
        b
        for b in run.received
        if any(isinstance(o, dict) and o.get("tenant") == ROUND_TRIP_TENANT for o in b.values())
    ]
    reasons = {b["reasonCode"] for b in owed_kcis}
    assert reasons <= {"ACKNOWLEDGED", "AMENDED", "CANCELLED", "CANCELLATION_REJECTED"}
    assert "ACKNOWLEDGED" in reasons
