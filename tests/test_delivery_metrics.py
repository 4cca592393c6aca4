"""The gauges the dispatcher's /metrics takes from scans of the database: orders in jeopardy by
rule and the KCIs 202 answers owe, scraped over real HTTP on 127.0.0.1 from a database arranged
to hold a known number of each; a scan that fails neither stops delivery nor loses its gauges."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from kci_engine import Engine, Event
from kci_engine.cli import main
from kci_engine.cli.dispatch import metric_scans
from kci_engine.delivery.metrics import DeliveryMetrics, Scans, serve
from kci_engine.delivery.settings import DeliverySettings, load_settings
from kci_engine.errors import ConfigurationError, StoreError
from kci_engine.inbound import AnswerLater, SupplierApi
from kci_engine.store.inbound import KINDS, SqlLedger
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import provide_order
from prometheus_client.parser import text_string_to_metric_families

from tests.test_delivery_service import ROOT, SECRET, Gateway, _dispatcher, _orders, _run_until

HEADERS = {"X-Request-ID": "r", "X-Conversation-ID": "c", "Tenant": "TENANT1"}
#: A committedDate well in the past, whenever the suite runs.
PASSED = {"committedDate": "2026-01-05T08:00:00.000Z", "targetDate": "2026-01-05T08:00:00.000Z"}
RULES = ("kci_owed", "date_passed", "waiting_without_kci", "appointment_passed", "kci_undelivered")


def _arrange(url: str) -> None:
    """Order 1 committed with a date that has passed (its KCIs to be delivered); order 2
    answered 202 and still owed its first KCI; order 3 answered 202 and acknowledged since, so
    it owes nothing though its ledger row is not marked settled yet."""
    with SqlStore(url) as store:
        engine = Engine(store)
        late = engine.accept_order("provide", provide_order(1))
        engine.apply(late, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S1"}})
        engine.apply(late, Event.COMMIT, {"order": PASSED})
        api = SupplierApi(engine, AnswerLater())
        for n in (2, 3):
            reply = api.create_order(HEADERS, json.dumps(provide_order(n)).encode())
            assert reply.status == 202
        engine.apply("TENANT1:3", Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S3"}})


def _scrape(port: int) -> dict[str, float]:
    """``/metrics`` over HTTP, as ``{'name{label="value"}': value}``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def _settings(url: str, **given: object) -> DeliverySettings:
    return load_settings(
        engine_db=url,
        gateway_url="http://127.0.0.1:1/v1",
        client_id="client-1",
        client_secret=SECRET,
        **given,
    )


def _expected_arrangement(values: dict[str, float]) -> None:
    jeopardy = {rule: values[f'kci_jeopardy_orders{{rule="{rule}"}}'] for rule in RULES}
    assert jeopardy == dict.fromkeys(RULES, 0.0) | {"date_passed": 1.0}
    owed = {kind: values[f'kci_owed_kcis{{kind="{kind}"}}'] for kind in KINDS}
    assert owed == {"order": 1.0, "amendment": 0.0, "cancellation": 0.0}
    assert values["kci_owed_oldest_age_seconds"] > 0
    assert values['kci_scan_errors_total{scan="jeopardy"}'] == 0
    assert values['kci_scan_errors_total{scan="owed"}'] == 0


def test_the_dispatchers_metrics_count_jeopardy_and_owed_kcis_in_the_database(
    sqlite_url: str,
) -> None:
    _arrange(sqlite_url)
    store = SqlStore(sqlite_url)
    metrics = DeliveryMetrics()
    with Gateway() as gateway, SqlStore(sqlite_url, read_only=True) as reader:
        dispatcher = _dispatcher(store, gateway.base_url, metrics=metrics)
        scans = metric_scans(metrics, _settings(sqlite_url), reader)
        server = serve(metrics, dispatcher, "127.0.0.1", 0)
        try:
            before = _scrape(server.server_address[1])
            _run_until(dispatcher, lambda: gateway.received["TENANT1:1"] == [1, 2])
            scans.run_once()
            after = _scrape(server.server_address[1])
        finally:
            server.shutdown()
            server.server_close()
        debts = SqlLedger(store).open_debts()
    assert not any(name.startswith("kci_jeopardy_orders") for name in before)  # no scan yet
    assert before["kci_owed_oldest_age_seconds"] == 0
    _expected_arrangement(after)
    assert after['kci_scan_last_success_timestamp_seconds{scan="jeopardy"}'] > 0
    assert after['kci_scan_duration_seconds{scan="owed"}'] >= 0
    # The scans only read: the debt order 3 has paid is left for the Supplier API to mark.
    assert sorted(d.gateway_id for d in debts) == [2, 3]
    store.close()


def test_a_failing_scan_does_not_stop_delivery(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A scan that raises on every round, every 10 ms, while three orders are delivered: all
    six KCIs arrive, its errors are counted, the log says so once, and the other scan goes on."""
    store, ids = _orders(sqlite_url, 3)
    metrics = DeliveryMetrics()
    scans = Scans(metrics, 0.01)
    rounds: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    scans.add("broken", broken)
    scans.add("fine", lambda: rounds.append(1))
    caplog.set_level(logging.WARNING, logger="kci_engine.delivery")
    with Gateway() as gateway:
        dispatcher = _dispatcher(store, gateway.base_url, metrics=metrics)
        server = serve(metrics, dispatcher, "127.0.0.1", 0)
        scans.start()
        try:
            _run_until(
                dispatcher,
                lambda: (
                    all(gateway.received[i] == [1, 2] for i in ids)
                    and metrics.scan_errors.labels("broken")._value.get() >= 2
                ),
            )
            values = _scrape(server.server_address[1])
        finally:
            assert scans.stop()
            server.shutdown()
            server.server_close()
    assert dispatcher.stats.delivered == 6
    assert all(gateway.received[i] == [1, 2] for i in ids)
    assert values['kci_scan_errors_total{scan="broken"}'] >= 2
    assert values['kci_scan_errors_total{scan="fine"}'] == 0
    assert len(rounds) >= 2
    said = [r.getMessage() for r in caplog.records if "broken scan" in r.getMessage()]
    assert said == [
        "the broken scan failed (RuntimeError: boom); its gauges keep their last values, "
        "it is tried again every 0.01 s"
    ]
    store.close()


def test_a_failed_scan_keeps_its_gauges_and_says_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = DeliveryMetrics()
    scans = Scans(metrics, 60)
    found: list[int | None] = [3, None, None, 1]  # None: the database cannot be read

    def scan() -> None:
        count = found.pop(0)
        if count is None:
            raise StoreError("disk I/O error", database="kci.db")
        metrics.jeopardy({"date_passed": count, "kci_owed": 0})

    scans.add("jeopardy", scan)
    caplog.set_level(logging.WARNING, logger="kci_engine.delivery")
    seen = []
    for _ in range(4):
        scans.run_once()
        seen.append(metrics.jeopardy_orders.labels("date_passed")._value.get())
    assert seen == [3, 3, 3, 1]
    assert metrics.scan_errors.labels("jeopardy")._value.get() == 2
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "the jeopardy scan failed (database kci.db: disk I/O error); its gauges keep their "
        "last values, it is tried again every 60 s",
        "the jeopardy scan works again",
    ]
    assert not any(r.exc_info for r in caplog.records)  # an engine error needs no traceback


def test_a_scan_interval_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="more than 0"):
        Scans(DeliveryMetrics(), 0)


def test_the_jeopardy_gauges_can_be_left_out(sqlite_url: str) -> None:
    _arrange(sqlite_url)
    metrics = DeliveryMetrics()
    settings = _settings(sqlite_url, metrics_jeopardy=False)
    with SqlStore(sqlite_url, read_only=True) as reader:
        metric_scans(metrics, settings, reader).run_once()
    assert metrics.owed_kcis.labels("order")._value.get() == 1
    assert not metrics.jeopardy_orders.collect()[0].samples


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kci_engine_dispatch_serves_the_gauges_it_scans(tmp_path: Path) -> None:
    """The command end to end: ``dispatch --metrics-port`` composes the jeopardy scan with the
    dispatcher's metrics; a scrape while it runs shows the arranged database's counts."""
    url = f"sqlite:///{tmp_path / 'kci.db'}"
    _arrange(url)
    port = _free_port()
    with Gateway() as gateway:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KCI_")},
            "KCI_ENGINE_DB": url,
            "KCI_GATEWAY_URL": gateway.base_url,
            "KCI_CLIENT_ID": "client-1",
            "KCI_CLIENT_SECRET": SECRET,
            "KCI_METRICS_SCAN_S": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "kci_engine.cli", "dispatch", "--metrics-port", str(port)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            values: dict[str, float] = {}
            deadline = time.monotonic() + 60  # only keeps a broken build from hanging
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    values = _scrape(port)
                except httpx.HTTPError:
                    values = {}
                if 'kci_scan_last_success_timestamp_seconds{scan="jeopardy"}' in values:
                    break
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail("the dispatcher ignored SIGTERM")
    assert proc.returncode == 0, err
    _expected_arrangement(values)


def _dispatch_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules: str, **env: str
) -> Result:
    """``kci-engine dispatch --once --metrics-port`` in this process on an empty database, with
    ``rules`` as the jeopardy rules file and ``env`` as more settings."""
    url = f"sqlite:///{tmp_path / 'kci.db'}"
    SqlStore(url).close()
    (tmp_path / "rules.toml").write_text(rules)
    for key in [k for k in os.environ if k.startswith("KCI_")]:
        monkeypatch.delenv(key)
    settings = {
        "KCI_GATEWAY_URL": "http://127.0.0.1:1/v1",
        "KCI_CLIENT_ID": "client-1",
        "KCI_CLIENT_SECRET": SECRET,
        "KCI_JEOPARDY_RULES": str(tmp_path / "rules.toml"),
        **env,
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # leave pytest's own handlers be
    return CliRunner().invoke(
        main, ["dispatch", "--db", url, "--metrics-port", str(_free_port()), "--once"]
    )


def test_dispatch_refuses_jeopardy_rules_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _dispatch_once(tmp_path, monkeypatch, "[rules.kci_owed]\nworking_hours = -1\n")
    assert result.exit_code == 1
    assert "Error: the jeopardy gauges: " in result.output
    assert "working_hours must be a number >= 0" in result.output
    assert "KCI_METRICS_JEOPARDY=false" in result.output
    assert "delivering to" not in result.output


def test_kci_metrics_scan_s_0_switches_the_scans_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the scans off the rules are not even read: a broken rules file does not matter."""
    result = _dispatch_once(tmp_path, monkeypatch, "not toml [", KCI_METRICS_SCAN_S="0")
    assert result.exit_code == 0, result.output
    assert "delivered 0" in result.output


def test_dispatch_stops_its_scans_when_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _dispatch_once(tmp_path, monkeypatch, "[rules.kci_owed]\nworking_hours = 8\n")
    assert result.exit_code == 0, result.output
    assert "kci-metrics-scans" not in [thread.name for thread in threading.enumerate()]
