"""Delivery end to end over real HTTP on 127.0.0.1: the outbox in a real database, the
dispatcher, and the sandbox gateway (a real uvicorn server) validating everything it receives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from kci_engine import Engine, Event
from kci_engine.cli import main
from kci_engine.delivery.client import GatewayClient
from kci_engine.delivery.dispatcher import Dispatcher
from kci_engine.delivery.policy import RetryPolicy
from kci_engine.store.outbox import Outbox
from kci_engine.store.sql import SqlStore
from kci_engine.store.tables import OUTBOX
from kci_engine.tooling.sandbox import SandboxConfig, running_sandbox
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

ROOT = Path(__file__).resolve().parent.parent


def _per_order(bodies: list[dict[str, object]]) -> dict[str, list[int]]:
    from kci_engine.tooling.sandbox import order_key

    seen: dict[str, list[int]] = defaultdict(list)
    for body in bodies:
        seen[order_key(body)].append(int(body["sequenceNumber"]))  # type: ignore[call-overload]
    return seen


def test_demo_with_faults_delivers_everything_in_order(tmp_path: Path) -> None:
    """--fault-rate 0.3: every KCI delivered, in per-order order, no id with two bodies."""
    out = tmp_path / "accepted.jsonl"
    result = CliRunner().invoke(main, ["demo", "--fault-rate", "0.3", "--jsonl", str(out)])
    assert result.exit_code == 0, result.output
    assert "delivered 31/31" in result.output
    assert "sequence violations 0" in result.output
    bodies = [json.loads(line) for line in out.read_text().splitlines()]
    # The lifecycles' 31 and what the round trip's 202 answers owed, each accepted once.
    owed = int(result.output.split(" KCIs the 202s owed delivered")[0].rsplit(" ", 1)[1])
    assert owed > 0
    assert len(bodies) == 31 + owed
    assert len({b["id"] for b in bodies}) == 31 + owed
    for numbers in _per_order(bodies).values():
        assert numbers == list(range(1, len(numbers) + 1))
    faults = result.output.split("faults injected: ")[1].split(";")[0]
    assert faults != "none"


def test_a_422_parks_that_order_and_every_other_order_is_delivered(sqlite_url: str) -> None:
    store = SqlStore(sqlite_url)
    engine = Engine(store)
    ids = []
    for n in range(1, 5):
        order_id = engine.accept_order("provide", provide_order(n))
        engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"S{n}"}})
        engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        engine.apply(order_id, Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE"})
        engine.apply(order_id, Event.RESUME)
        ids.append(order_id)
    # Corrupt one stored body (as a bug or a gateway rule change might): DELAY loses its code.
    broken = store.kcis(ids[1])[2]
    body = dict(broken.body)
    body.pop("problemCode")
    with store.db.begin() as conn:
        conn.execute(
            OUTBOX.update().where(OUTBOX.c.kci_id == broken.kci_id).values(body=json.dumps(body))
        )
    with running_sandbox(SandboxConfig()) as gateway:
        client = GatewayClient(gateway.base_url, "sandbox-client", "sandbox-secret", timeout_s=2)
        policy = RetryPolicy(base_s=0.01, cap_s=0.1)
        Dispatcher(store, client, policy=policy, concurrency=4, poll_s=0.01).run(idle_exit=True)
        client.close()
        timelines = {i: [b["sequenceNumber"] for b in gateway.state.timeline(i)] for i in ids}
        stats = gateway.state.stats()
    assert timelines[ids[0]] == timelines[ids[2]] == timelines[ids[3]] == [1, 2, 3, 4]
    assert timelines[ids[1]] == [1, 2]
    assert stats["rejected"]["422"] == 1
    [dead] = Outbox(store).dead_letters()
    assert (dead.order_id, dead.sequence_number, dead.waiting) == (ids[1], 3, 1)
    assert "INVALID_REQUEST" in (dead.last_error or "")
    assert "problemCode" in (dead.last_error or "")
    store.close()


def _backlog(url: str, orders: int, per_order: int) -> int:
    """Orders each carrying ``per_order`` KCIs (ack, commit, then warnings), in big batches."""
    store = SqlStore(url)
    engine = Engine(store)
    warn = {"problem_code": "NETWORK_ISSUE"}
    items: list[tuple[str, Event, dict[str, object] | None]] = []
    for n in range(1, orders + 1):
        order_id = f"TENANT1:{n}"
        items.append((order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"S{n}"}}))
        items.append((order_id, Event.COMMIT, {"order": COMMIT_DATES}))
        items.extend((order_id, Event.WARN, warn) for _ in range(per_order - 2))
    with store.batch():
        for n in range(1, orders + 1):
            engine.accept_order("provide", provide_order(n))
    for start in range(0, len(items), 2000):
        engine.apply_batch(items[start : start + 2000])
    total = int(store.outbox_status()["counts"]["PENDING"])
    store.close()
    return total


def test_two_dispatcher_processes_share_a_10k_backlog_on_postgresql(postgres_url: str) -> None:
    """Two `kci-engine dispatch` processes on one PostgreSQL outbox deliver 10,000 KCIs to the
    sandbox with no KCI lost and no reordering within any order."""
    from tests.conftest import _fresh_postgres_database

    gen = _fresh_postgres_database(postgres_url, "two_dispatchers")
    url = next(gen)
    try:
        total = _backlog(url, orders=1000, per_order=10)
        assert total == 10_000
        with running_sandbox(SandboxConfig()) as gateway:
            env = {
                **os.environ,
                "KCI_ENGINE_DB": url,
                "KCI_GATEWAY_URL": gateway.base_url,
                "KCI_CLIENT_ID": "sandbox-client",
                "KCI_CLIENT_SECRET": "sandbox-secret",
                "KCI_CONCURRENCY": "6",
                "KCI_POLL_S": "0.05",
            }
            workers = [
                subprocess.Popen(
                    [sys.executable, "-m", "kci_engine.cli", "dispatch", "--once"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            started = time.monotonic()
            errors = []
            for proc in workers:
                _, err = proc.communicate(timeout=600)
                assert proc.returncode == 0, err
                errors.append(err)
            elapsed = time.monotonic() - started
            stats = gateway.state.stats()
            timelines = {key: gateway.state.timeline(key) for key in gateway.state.orders()}
        assert stats["accepted"] == 10_000
        assert stats["violations"] == 0
        assert len(timelines) == 1000
        for bodies in timelines.values():
            assert [b["sequenceNumber"] for b in bodies] == list(range(1, 11))
        shares = [int(e.rsplit("delivered ", 1)[1].split(",")[0]) for e in errors]
        assert sum(shares) >= 10_000
        assert all(share > 0 for share in shares), shares  # both processes did real work
        store = SqlStore(url)
        assert store.outbox_status()["counts"] == {"PENDING": 0, "DELIVERED": 10_000, "DEAD": 0}
        store.close()
        print(f"10,000 KCIs by two dispatchers in {elapsed:.1f} s")
    finally:
        next(gen, None)


@pytest.mark.parametrize("missing", ["KCI_GATEWAY_URL", "KCI_CLIENT_SECRET"])
def test_dispatch_names_a_missing_setting(missing: str, sqlite_url: str) -> None:
    env = {
        "KCI_ENGINE_DB": sqlite_url,
        "KCI_GATEWAY_URL": "http://127.0.0.1:9/v1",
        "KCI_CLIENT_ID": "c",
        "KCI_CLIENT_SECRET": "super-secret-value",
    }
    env.pop(missing)
    for key in list(os.environ):
        if key.startswith("KCI_"):
            env.setdefault(key, "")
    result = CliRunner().invoke(main, ["dispatch", "--once"], env=env)
    assert result.exit_code == 1
    assert missing in result.output
    assert "super-secret-value" not in result.output


def test_dispatch_refuses_plain_http_to_a_remote_gateway(sqlite_url: str) -> None:
    env = {
        "KCI_ENGINE_DB": sqlite_url,
        "KCI_GATEWAY_URL": "http://gateway.example/v1",
        "KCI_CLIENT_ID": "c",
        "KCI_CLIENT_SECRET": "s",
    }
    result = CliRunner().invoke(main, ["dispatch", "--once"], env=env)
    assert result.exit_code == 1
    assert "use https" in result.output
