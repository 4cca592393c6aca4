"""The demo: every order type, all 18 reason codes, every body valid, sequences gapless."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from click.testing import CliRunner
from kci_engine.cli import main
from kci_engine.core.codes import OrderType, ReasonCode
from kci_engine.orders import SPECS, parse_kci
from kci_engine.tooling.demo import SAMPLES, play
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
    assert len(per_order) == len(SAMPLES)
    for bodies in per_order.values():
        assert [b["sequenceNumber"] for b in bodies] == list(range(1, len(bodies) + 1))
        issued = [b["issuedOn"] for b in bodies]
        assert issued == sorted(issued)


def test_demo_reports_unwritable_jsonl(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--jsonl", str(tmp_path / "missing" / "x.jsonl")])
    assert result.exit_code != 0
    assert "cannot write" in result.output
