"""Delivery as a service, against real HTTP servers on 127.0.0.1 and a real SQLite file: a
gateway or token endpoint that trickles its answer does not hold healthy orders; SIGTERM ends a
dispatcher in a bounded time; settings are bounded; the client's own secrets never reach the
outbox or the log; a held database lock is waited out; leases are fenced."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner
from kci_engine import Engine, Event
from kci_engine.cli import main
from kci_engine.delivery.client import GatewayClient
from kci_engine.delivery.dispatcher import Dispatcher
from kci_engine.delivery.policy import RetryPolicy
from kci_engine.delivery.settings import DeliverySettings, load_settings
from kci_engine.errors import ConfigurationError, StoreError
from kci_engine.store.outbox import Mark, Outbox
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.sandbox import order_key
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

ROOT = Path(__file__).resolve().parent.parent
SECRET = "very-secret-value-42"
TOKEN = "tok-the-bearer-token-1234"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """A gateway on a loopback port, in a thread of its own; ``kcis`` and ``token`` are its
    handlers (replaceable while it runs); ``received`` holds each order's delivered numbers."""

    def __init__(self) -> None:
        self.received: dict[str, list[int]] = defaultdict(list)
        self.token_calls = 0
        self.kcis: Handler = self.accept
        self.token: Handler = self.issue
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.base_url = ""

    async def issue(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"access_token": TOKEN, "expires_in": 3600})

    async def accept(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.received[order_key(body)].append(int(body["sequenceNumber"]))
        return web.Response(status=204)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def token(request: web.Request) -> web.StreamResponse:
            self.token_calls += 1
            return await self.token(request)

        async def kcis(request: web.Request) -> web.StreamResponse:
            return await self.kcis(request)

        app = web.Application()
        app.router.add_post("/v1/auth/supplier/access-token", token)
        app.router.add_post("/v1/kcis", kcis)
        runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Gateway:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def trickle(request: web.Request) -> web.StreamResponse:
    """Headers at once, then one byte a second, for ever (what a stuck proxy does)."""
    await request.read()
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    while True:
        await response.write(b" ")
        await asyncio.sleep(1)


def _orders(url: str, count: int, start: int = 1) -> tuple[SqlStore, list[str]]:
    store = SqlStore(url)
    engine = Engine(store)
    ids = []
    for n in range(start, start + count):
        order_id = engine.accept_order("provide", provide_order(n))
        engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"S{n}"}})
        engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        ids.append(order_id)
    return store, ids


def _dispatcher(store: SqlStore, base_url: str, **kwargs: object) -> Dispatcher:
    client = GatewayClient(base_url, "client-1", SECRET, timeout_s=1.0)
    options: dict[str, object] = {
        "policy": RetryPolicy(base_s=0.05, cap_s=0.2, horizon_s=600),
        "concurrency": 2,
        "poll_s": 0.02,
        "lease_s": 3.0,
        "stop_grace_s": 1.0,
    }
    options.update(kwargs)
    return Dispatcher(store, client, **options)  # type: ignore[arg-type]


def _run_until(dispatcher: Dispatcher, done: Callable[[], bool], limit_s: float = 30) -> None:
    """Run until ``done()`` (the limit only keeps a broken build from hanging the suite)."""
    deadline = time.monotonic() + limit_s
    dispatcher.run(until=lambda: done() or time.monotonic() > deadline)


# --- slow answers --------------------------------------------------------------------------------


def test_a_trickling_gateway_does_not_hold_healthy_orders(sqlite_url: str) -> None:
    """Two orders whose KCIs the gateway answers a byte a second, two workers: the ten healthy
    orders are delivered all the same, and the trickled KCIs wait for a retry, undelivered."""
    store, ids = _orders(sqlite_url, 12)
    stuck = set(ids[:2])
    with Gateway() as gateway:

        async def kcis(request: web.Request) -> web.StreamResponse:
            body = json.loads(await request.read())
            if order_key(body) in stuck:
                return await trickle(request)
            gateway.received[order_key(body)].append(int(body["sequenceNumber"]))
            return web.Response(status=204)

        gateway.kcis = kcis
        dispatcher = _dispatcher(store, gateway.base_url)
        healthy = ids[2:]
        _run_until(dispatcher, lambda: all(gateway.received[i] == [1, 2] for i in healthy))
    assert all(gateway.received[i] == [1, 2] for i in healthy)
    for order_id in stuck:
        first = store.outbox(order_id)[0]
        assert first.delivery_state == "PENDING"
        assert "total timeout of 1 s" in (first.last_error or "")
    store.close()


def test_a_trickling_token_endpoint_does_not_stop_delivery(sqlite_url: str) -> None:
    """The first token fetch trickles: it is cut off at the deadline, retried after a backoff,
    and every KCI is delivered."""
    store, ids = _orders(sqlite_url, 6)
    with Gateway() as gateway:

        async def token(request: web.Request) -> web.StreamResponse:
            if gateway.token_calls == 1:
                return await trickle(request)
            return await gateway.issue(request)

        gateway.token = token
        dispatcher = _dispatcher(store, gateway.base_url, concurrency=4)
        _run_until(dispatcher, lambda: all(gateway.received[i] == [1, 2] for i in ids))
    assert all(gateway.received[i] == [1, 2] for i in ids)
    assert gateway.token_calls >= 2
    assert store.outbox_status()["counts"]["DELIVERED"] == 12
    store.close()


def test_sigterm_stops_a_dispatcher_stuck_on_a_stalled_gateway(tmp_path: Path) -> None:
    """Every request trickles and the request timeout is long; SIGTERM still ends the process
    within its grace time, and nothing is lost: the KCIs stay pending."""
    url = f"sqlite:///{tmp_path / 'kci.db'}"
    store, _ids = _orders(url, 4)
    store.close()
    with Gateway() as gateway:
        gateway.kcis = trickle
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KCI_")},
            "KCI_ENGINE_DB": url,
            "KCI_GATEWAY_URL": gateway.base_url,
            "KCI_CLIENT_ID": "client-1",
            "KCI_CLIENT_SECRET": SECRET,
            "KCI_TIMEOUT_S": "60",
            "KCI_LEASE_S": "130",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "kci_engine.cli", "dispatch"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        assert "delivering to" in proc.stderr.readline()  # it runs; requests are in flight
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)  # grace 5 s; the request timeout is 60 s
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the dispatcher ignored SIGTERM")
    assert proc.returncode == 0, err
    assert "delivered 0" in err
    with SqlStore(url) as after:
        assert after.outbox_status()["counts"] == {"PENDING": 8, "DELIVERED": 0, "DEAD": 0}


# --- settings ------------------------------------------------------------------------------------

BASE_ENV = {
    "KCI_GATEWAY_URL": "https://gw.example/v1",
    "KCI_CLIENT_ID": "c",
    "KCI_CLIENT_SECRET": SECRET,
}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("KCI_RETRY_BASE_S", "inf", "finite"),
        ("KCI_RETRY_BASE_S", "1e308", "less than or equal"),
        ("KCI_RETRY_CAP_S", "inf", "finite"),
        ("KCI_RETRY_CAP_S", "1e308", "less than or equal"),
        ("KCI_RETRY_HORIZON_S", "nan", "finite"),
        ("KCI_TIMEOUT_S", "nan", "finite"),
        ("KCI_TIMEOUT_S", "0", "greater than 0"),
        ("KCI_POLL_S", "-1", "greater than or equal"),
        ("KCI_CONCURRENCY", "0", "greater than or equal"),
        ("KCI_CONCURRENCY", "100000", "less than or equal"),
        ("KCI_LEASE_S", "inf", "finite"),
        ("KCI_GATEWAY_URL", "https://gw.example:99999/v1", "port 99999"),
        ("KCI_WORKER_ID", "a\x1b[31mb", "printable"),
        ("KCI_METRICS_SCAN_S", "0.5", "0 (no scans) or at least 1 second"),
        ("KCI_METRICS_SCAN_S", "nan", "finite"),
        ("KCI_METRICS_SCAN_S", "100000", "less than or equal"),
    ],
)
def test_every_numeric_setting_is_bounded_and_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    for key, given in BASE_ENV.items():
        monkeypatch.setenv(key, given)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert name in caught.value.message
    assert says in caught.value.message


def test_settings_across_fields_are_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, given in BASE_ENV.items():
        monkeypatch.setenv(key, given)
    monkeypatch.setenv("KCI_RETRY_BASE_S", "10")
    monkeypatch.setenv("KCI_RETRY_CAP_S", "5")
    with pytest.raises(ConfigurationError, match=r"KCI_RETRY_CAP_S .* KCI_RETRY_BASE_S"):
        load_settings()
    monkeypatch.setenv("KCI_RETRY_CAP_S", "50")
    monkeypatch.setenv("KCI_LEASE_S", "15")
    with pytest.raises(ConfigurationError, match=r"KCI_LEASE_S .* KCI_TIMEOUT_S"):
        load_settings()


def test_the_database_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, given in BASE_ENV.items():
        monkeypatch.setenv(key, given)
    monkeypatch.setenv("KCI_ENGINE_DB", "postgresql+psycopg://kci:hunter2-pw@db.example/kci")
    settings = load_settings()
    assert settings.engine_db.endswith("hunter2-pw@db.example/kci")  # still usable
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "hunter2-pw" not in shown
    assert SECRET not in shown
    assert "kci:***@db.example" in shown
    assert isinstance(settings, DeliverySettings)


# --- secrets that come back ----------------------------------------------------------------------


def test_a_token_echoed_by_the_gateway_is_never_stored_or_logged(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 422 whose body echoes the request's Authorization header and the client secret: the
    dead letter, its log line and `outbox dead-letters` carry neither."""
    caplog.set_level(logging.DEBUG)
    store, ids = _orders(sqlite_url, 1)
    with Gateway() as gateway:

        async def echo(request: web.Request) -> web.StreamResponse:
            auth = request.headers["Authorization"]
            return web.json_response(
                {
                    "uuid": "e-1",
                    "code": "INVALID_REQUEST",
                    "messages": [f"bad header {auth}", f"secret was {SECRET}"],
                },
                status=422,
            )

        gateway.kcis = echo
        stats = _dispatcher(store, gateway.base_url).run(idle_exit=True)
    assert stats.dead == 1
    [dead] = Outbox(store).dead_letters()
    assert dead.order_id == ids[0]
    assert dead.last_error is not None
    assert "INVALID_REQUEST" in dead.last_error
    assert "Bearer ***" in dead.last_error
    listed = CliRunner().invoke(main, ["outbox", "dead-letters", "--db", sqlite_url]).output
    for text in (dead.last_error, caplog.text, listed):
        assert TOKEN not in text
        assert SECRET not in text
    store.close()


# --- the database --------------------------------------------------------------------------------


def test_a_held_write_lock_is_waited_out_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds BEGIN IMMEDIATE for 2 s, past the dispatcher's busy timeout:
    the dispatcher waits, says so once, and delivers everything when the lock goes."""
    path = tmp_path / "kci.db"
    seed, ids = _orders(f"sqlite:///{path}", 4)
    seed.close()
    store = SqlStore(f"sqlite:///{path}", busy_timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(2.0, lambda: holder.execute("ROLLBACK"))
    released.start()
    try:
        with Gateway() as gateway:
            dispatcher = _dispatcher(store, gateway.base_url)
            _run_until(dispatcher, lambda: all(gateway.received[i] == [1, 2] for i in ids))
    finally:
        released.join()
        holder.close()
    assert store.outbox_status()["counts"]["DELIVERED"] == 8
    said = [r.getMessage() for r in caplog.records if "database is unavailable" in r.getMessage()]
    assert len(said) == 1, said
    assert "write lock" in said[0]
    assert any("available again" in r.getMessage() for r in caplog.records)
    store.close()


def test_a_replaced_database_file_stops_the_dispatcher(tmp_path: Path) -> None:
    path = tmp_path / "kci.db"
    store, _ids = _orders(f"sqlite:///{path}", 1)
    with Gateway() as gateway:
        dispatcher = _dispatcher(store, gateway.base_url)
        result: list[BaseException] = []

        def run() -> None:
            try:
                _run_until(dispatcher, lambda: False, limit_s=30)
            except StoreError as exc:
                result.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.5)
        shutil.copy(path, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", path)
        worker.join(30)
    assert result, "the dispatcher went on with a replaced database file"
    assert "replaced" in str(result[0])
    store.close()


# --- leases --------------------------------------------------------------------------------------


def test_leases_are_fenced_and_a_restarted_worker_takes_its_own_back(sqlite_url: str) -> None:
    store, ids = _orders(sqlite_url, 1)
    outbox = Outbox(store)
    order = ids[0]
    first = outbox.claim_many([order], "worker-a", lease_s=0.001)[order]
    time.sleep(0.01)  # worker-a is paused past its lease ...
    second = outbox.claim_many([order], "worker-b", lease_s=60)[order]
    assert second == first + 1
    # ... and learns at its next renewal that the order is no longer its own
    [stale] = outbox.commit("worker-a", 60, [Mark("renew", order, first)])
    assert not stale.held
    [fresh] = outbox.commit("worker-b", 60, [Mark("renew", order, second)])
    assert fresh.held
    assert outbox.due_heads(10) == []  # held: nobody else is offered it
    # worker-b is restarted under the same id: it releases its old leases at once
    assert outbox.release_all("worker-b") == 1
    assert [h.order_id for h in outbox.due_heads(10)] == [order]
    store.close()


# --- metrics and health --------------------------------------------------------------------------


def test_metrics_and_health_are_served(sqlite_url: str) -> None:
    import httpx
    from kci_engine.delivery.metrics import DeliveryMetrics, serve

    store, ids = _orders(sqlite_url, 3)
    metrics = DeliveryMetrics()
    with Gateway() as gateway:
        dispatcher = _dispatcher(store, gateway.base_url, metrics=metrics)
        server = serve(metrics, dispatcher, "127.0.0.1", 0)
        root = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            _run_until(dispatcher, lambda: all(gateway.received[i] == [1, 2] for i in ids))
            text = httpx.get(root + "/metrics").text
            healthy = httpx.get(root + "/healthz")

            async def refuse(request: web.Request) -> web.StreamResponse:
                return web.json_response(
                    {"uuid": "u", "code": "FORBIDDEN", "messages": ["no"]}, status=403
                )

            gateway.kcis = refuse
            more, _ = _orders(sqlite_url, 1, start=50)
            more.close()
            _run_until(
                dispatcher,
                lambda: (
                    dispatcher.gateway is not None and dispatcher.gateway.token_state == "refused"
                ),
            )
            degraded = httpx.get(root + "/healthz")
        finally:
            server.shutdown()
            server.server_close()
    assert 'kci_sends_total{outcome="DELIVERED",status="204"} 6.0' in text
    assert "kci_commit_to_delivered_seconds_count 6.0" in text
    assert 'kci_backlog{state="PENDING"} 6.0' in text  # read when the run began
    assert "kci_oldest_undelivered_age_seconds" in text
    assert all(line.startswith(("kci_", "#")) for line in text.splitlines() if line.strip())
    assert healthy.status_code == 200
    assert healthy.json()["status"] == "ok"
    assert degraded.status_code == 503
    assert degraded.json()["token"] == "refused"
    store.close()


def test_the_operations_page_lists_every_metric_the_dispatcher_exports() -> None:
    """docs/operations.md's metrics table names each metric as Prometheus exposes it (counters
    with ``_total``), no more and no fewer."""
    import re

    from kci_engine.delivery.metrics import DeliveryMetrics

    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in DeliveryMetrics().registry.collect()
    }
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^  \| `(kci_[a-z_]+)", page, flags=re.MULTILINE))
    assert documented == exported


def test_dispatch_can_log_json_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kci.db'}"
    store, _ids = _orders(url, 1)
    store.close()
    with Gateway() as gateway:

        async def refuse(request: web.Request) -> web.StreamResponse:
            return web.json_response(
                {"uuid": "u", "code": "INVALID_REQUEST", "messages": ["bad\x1b[31m"]}, status=422
            )

        gateway.kcis = refuse
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KCI_")},
            "KCI_ENGINE_DB": url,
            "KCI_GATEWAY_URL": gateway.base_url,
            "KCI_CLIENT_ID": "client-1",
            "KCI_CLIENT_SECRET": SECRET,
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "kci_engine.cli",
                "dispatch",
                "--once",
                "--log-format",
                "json",
                "--worker-id",
                "pod-7",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    dead = [line for line in lines if line["message"].startswith("dead-lettered")]
    assert len(dead) == 1
    assert dead[0]["level"] == "WARNING"
    assert dead[0]["worker"] == "pod-7"
    assert dead[0]["logger"] == "kci_engine.delivery"
    assert "\x1b" not in done.stderr  # escaped by JSON


# --- repair --------------------------------------------------------------------------------------


def _delayed_and_resumed(engine: Engine) -> str:
    """A provide order with four KCIs: acknowledged, committed, delayed and resumed."""
    order_id = engine.accept_order("provide", provide_order(1))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S1"}})
    engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
    engine.apply(order_id, Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE"})
    engine.apply(order_id, Event.RESUME)
    return order_id


def test_a_refused_kci_is_repaired_and_sent_again_with_the_same_sequence_number(
    sqlite_url: str,
) -> None:
    """A DELAY KCI without its problemCode (corrupted in the outbox) is refused 422 by the
    sandbox; `outbox repair` adds it back, validated by the contract, and the order's KCIs go out
    in sequence; the refused body and the answer stay in kci_repair."""
    import sqlalchemy as sa
    from kci_engine.store.tables import OUTBOX, REPAIRS
    from kci_engine.tooling.sandbox import SandboxConfig, running_sandbox

    store = SqlStore(sqlite_url)
    engine = Engine(store)
    order_id = _delayed_and_resumed(engine)
    broken = store.kcis(order_id)[2]
    body = dict(broken.body)
    body.pop("problemCode")
    with store.db.begin() as conn:
        conn.execute(
            OUTBOX.update().where(OUTBOX.c.kci_id == broken.kci_id).values(body=json.dumps(body))
        )
    with running_sandbox(SandboxConfig()) as gateway:

        def deliver() -> None:
            client = GatewayClient(gateway.base_url, "sandbox-client", "sandbox-secret")
            Dispatcher(store, client, concurrency=2, poll_s=0.01).run(idle_exit=True)

        deliver()
        assert [b["sequenceNumber"] for b in gateway.state.timeline(order_id)] == [1, 2]
        runner = CliRunner()

        def repair(patch: str) -> str:
            args = ["outbox", "repair", order_id, "--patch", patch, "--db", sqlite_url]
            return runner.invoke(main, [*args, "--by", "ops"]).output

        assert "unchanged" in repair("{}")
        assert "keeps the KCI's sequenceNumber" in repair('{"sequenceNumber": 9}')
        assert "breaks the contract" in repair('{"problemCode": "NOT_A_CODE"}')
        said = repair('{"problemCode": "WAYLEAVE_ISSUE"}')
        assert f"repaired KCI {broken.kci_id} (#3)" in said, said
        deliver()
        sent = gateway.state.timeline(order_id)
    assert [b["sequenceNumber"] for b in sent] == [1, 2, 3, 4]
    assert sent[2]["id"] == broken.kci_id
    assert sent[2]["problemCode"] == "WAYLEAVE_ISSUE"
    with store.db.connect() as conn:
        [audit] = conn.execute(sa.select(REPAIRS)).all()
    assert json.loads(audit.refused_body) == body
    assert "INVALID_REQUEST" in (audit.gateway_answer or "")
    assert json.loads(audit.corrected_body)["problemCode"] == "WAYLEAVE_ISSUE"
    assert audit.repaired_by == "ops"
    assert Outbox(store).dead_letters() == []
    store.close()


def test_a_kci_refused_for_the_orders_data_is_repaired_from_the_corrected_order(
    sqlite_url: str,
) -> None:
    """The gateway refuses KCI #2 for the order's notes (1,001 characters, as a bug or a rule
    change might leave them in the stored order and in every KCI after it). `outbox repair
    --order` corrects the order, the dead KCI and the KCIs parked behind it, in one transaction
    and with the same ids and sequence numbers; the next KCI the engine makes carries the
    correction; the event log keeps it, so history replay still finds the order identical and
    reconciliation finds it in step."""
    import sqlalchemy as sa
    from kci_engine.history.reconcile import reconcile
    from kci_engine.history.replay import Outcome, replay_history
    from kci_engine.store.tables import ORDERS, OUTBOX, REPAIRS
    from kci_engine.tooling.sandbox import SandboxConfig, running_sandbox

    store = SqlStore(sqlite_url)
    engine = Engine(store)
    order_id = _delayed_and_resumed(engine)
    kcis = store.kcis(order_id)
    too_long = "x" * 1001
    with store.db.begin() as conn:
        document = json.loads(conn.execute(sa.select(ORDERS.c.document)).scalar_one())
        conn.execute(ORDERS.update().values(document=json.dumps({**document, "notes": too_long})))
        for kci in kcis[1:]:
            body = {**kci.body}
            body["provideServiceOrder"] = {**body["provideServiceOrder"], "notes": too_long}
            conn.execute(
                OUTBOX.update().where(OUTBOX.c.kci_id == kci.kci_id).values(body=json.dumps(body))
            )
    runner = CliRunner()

    def repair(*args: str) -> str:
        found = runner.invoke(main, ["outbox", "repair", order_id, *args, "--db", sqlite_url])
        return found.output

    with running_sandbox(SandboxConfig()) as gateway:

        def deliver() -> None:
            client = GatewayClient(gateway.base_url, "sandbox-client", "sandbox-secret")
            Dispatcher(store, client, concurrency=2, poll_s=0.01).run(idle_exit=True)

        deliver()
        assert [b["sequenceNumber"] for b in gateway.state.timeline(order_id)] == [1]
        assert "say what to correct" in repair()
        assert "at most 1000 characters" in repair("--order", json.dumps({"notes": too_long}))
        assert "not a field of a provide order" in repair("--order", '{"colour": "red"}')
        assert "identifies the order and cannot change" in repair("--order", '{"tenant": "X"}')
        with store.db.connect() as conn:  # each refusal changed nothing
            assert conn.execute(sa.select(sa.func.count()).select_from(REPAIRS)).scalar() == 0
        said = repair("--order", '{"notes": "Call before arriving"}', "--by", "ops")
        assert f"repaired KCI {kcis[1].kci_id} (#2) of order {order_id} (and 2 KCI(s)" in said
        deliver()
        sent = gateway.state.timeline(order_id)
        assert [b["sequenceNumber"] for b in sent] == [1, 2, 3, 4]
        assert [b["id"] for b in sent] == [k.kci_id for k in kcis]
        assert [b["provideServiceOrder"].get("notes") for b in sent[1:]] == [
            "Call before arriving"
        ] * 3
        engine.apply(order_id, Event.COMPLETE, {"service_characteristics": {"SERVICE_ID": "SVC-1"}})
        deliver()
        sent = gateway.state.timeline(order_id)
    assert sent[-1]["provideServiceOrder"]["notes"] == "Call before arriving"
    assert store.events(order_id)[-2].event == "repaired"
    assert store.events(order_id)[-2].data.order == {"notes": "Call before arriving"}
    with store.db.connect() as conn:
        audits = conn.execute(sa.select(REPAIRS).order_by(REPAIRS.c.seq)).all()
    assert [a.sequence_number for a in audits] == [2, 3, 4]
    assert "INVALID_REQUEST" in (audits[0].gateway_answer or "")
    assert [a.gateway_answer for a in audits[1:]] == [None, None]
    assert all(a.repaired_by == "ops" for a in audits)
    # The engine's own first bodies had the corrupted notes, so replay reports that difference
    # and nothing else: KCIs #2-#4 as stored before the repair, then the corrected #5.
    [replayed] = replay_history(store)
    assert replayed.outcome is Outcome.DIFFERENT
    assert all("notes" in line or not line.startswith(("+ ", "- ")) for line in replayed.diff)
    assert list(reconcile(store)) == []
    store.close()
