"""Delivery benchmarks (run through tools/bench.py, which prints them on its JSON line).

``bench_delivery_service``: the asyncio dispatcher against a stand-in gateway (an aiohttp server
in a process of its own on loopback that answers 204 after a fixed latency and checks that each
order's KCIs arrive in sequence, one at a time), beside a bare aiohttp loop posting the same
bodies with the same per-order order; the dispatcher's CPU per KCI with the gateway at 0 ms; and
how the due-order query grows from 500 to 100,000 pending KCIs. (``bench_delivery`` in
tools/bench.py measures delivery to the sandbox, which validates every body.)

    python tools/bench_delivery.py --gateway PORT LATENCY_MS   (the stand-in gateway itself)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from kci_engine import Engine, Event, OrderType
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"


# --- the stand-in gateway ------------------------------------------------------------------------


def serve_gateway(port: int, latency_ms: float) -> None:
    """A gateway that answers ``POST /v1/kcis`` with 204 after ``latency_ms`` and counts what
    would be a fault: a KCI out of sequence, or two KCIs of one order in flight at once."""
    from aiohttp import web
    from kci_engine.tooling.sandbox import order_key

    latency = latency_ms / 1000
    last: dict[str, int] = {}
    busy: set[str] = set()
    counts = {"accepted": 0, "out_of_sequence": 0, "overlapping": 0}

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "bench-token", "expires_in": 3600})

    async def kcis(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        key = order_key(body)
        if key in busy:
            counts["overlapping"] += 1
        busy.add(key)
        try:
            seq = int(body["sequenceNumber"])
            if seq != last.get(key, 0) + 1 and seq != last.get(key, 0):  # a resend is fine
                counts["out_of_sequence"] += 1
            last[key] = seq
            if latency:
                await asyncio.sleep(latency)
        finally:
            busy.discard(key)
        counts["accepted"] += 1
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def reset(request: web.Request) -> web.Response:
        last.clear()
        counts.update(accepted=0, out_of_sequence=0, overlapping=0)
        return web.json_response(counts)

    app = web.Application()
    app.router.add_post("/v1/auth/supplier/access-token", token)
    app.router.add_post("/v1/kcis", kcis)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, backlog=4096, print=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gateway_process(latency_ms: float) -> Iterator[str]:
    """The stand-in gateway in a process of its own; yields its base URL (``.../v1``)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--gateway", str(port), str(latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(root + "/stats", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield root + "/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _gateway_stats(base: str, *, reset: bool = False) -> dict[str, int]:
    root = base.removesuffix("/v1")
    stats: dict[str, int] = httpx.get(root + "/stats", timeout=10).json()
    if reset:
        httpx.post(root + "/reset", timeout=10)
    return stats


# --- backlogs ------------------------------------------------------------------------------------


def backlog(url: str, orders: int, per_order: int = 5, start: int = 1) -> int:
    """``orders`` provide orders with ``per_order`` KCIs each (ack, commit, warnings)."""
    from kci_engine.store.sql import SqlStore

    store = SqlStore(url)
    engine = Engine(store)
    warn = {"problem_code": "NETWORK_ISSUE"}
    items: list[tuple[str, Event, dict[str, Any] | None]] = []
    with store.batch():
        ids = [
            engine.accept_order(OrderType.PROVIDE, provide_order(n))
            for n in range(start, start + orders)
        ]
    for order_id in ids:
        items.append((order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}}))
        items.append((order_id, Event.COMMIT, {"order": COMMIT_DATES}))
        items.extend((order_id, Event.WARN, warn) for _ in range(per_order - 2))
    for first in range(0, len(items), 5000):
        engine.apply_batch(items[first : first + 5000])
    pending = int(store.outbox_status()["counts"]["PENDING"])
    store.close()
    return pending


def _bodies(url: str) -> list[list[bytes]]:
    """Every order's KCI bodies, in sequence."""
    from kci_engine.store.sql import SqlStore

    with SqlStore(url) as store:
        return [
            [entry.kci.json().encode() for entry in store.outbox(order_id)]
            for order_id in store.order_ids()
        ]


# --- the dispatcher and a bare aiohttp loop ------------------------------------------------------


def _dispatch(url: str, base: str, concurrency: int) -> tuple[int, float, float]:
    """Deliver the backlog; KCIs delivered, wall seconds, process CPU seconds."""
    from kci_engine.delivery.client import GatewayClient
    from kci_engine.delivery.dispatcher import Dispatcher
    from kci_engine.delivery.policy import RetryPolicy
    from kci_engine.store.sql import SqlStore

    with SqlStore(url) as store, GatewayClient(base, CLIENT_ID, CLIENT_SECRET) as client:
        dispatcher = Dispatcher(
            store, client, policy=RetryPolicy(0.05, 1.0), concurrency=concurrency, poll_s=0.01
        )
        cpu, wall = time.process_time(), time.perf_counter()
        delivered = dispatcher.run(idle_exit=True).delivered
        return delivered, time.perf_counter() - wall, time.process_time() - cpu


def _bare_aiohttp(base: str, orders: list[list[bytes]], concurrency: int) -> float:
    """KCIs per second of a bare aiohttp loop: ``concurrency`` workers, each taking one order at
    a time and posting its bodies in sequence; no database."""
    import aiohttp

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency + 4, keepalive_timeout=30)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(base + "/auth/supplier/access-token", data={}) as r:
                token = (await r.json())["access_token"]
            queue = list(reversed(orders))
            sent = 0

            async def worker() -> None:
                nonlocal sent
                while queue:
                    for n, body in enumerate(queue.pop()):
                        headers = {
                            "Authorization": f"Bearer {token}",
                            "Content-Type": "application/json",
                            "X-Request-ID": f"r{n}",
                            "X-Conversation-ID": "bench",
                        }
                        async with session.post(base + "/kcis", data=body, headers=headers) as r:
                            await r.read()
                            assert r.status == 204
                        sent += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return sent / (time.perf_counter() - started)

    return asyncio.run(run())


def _due_query_s(url: str, rounds: int = 200) -> float:
    """Median time to pick the next 128 due orders (another dispatcher holds none)."""
    from kci_engine.store.outbox import Outbox
    from kci_engine.store.sql import SqlStore

    with SqlStore(url) as store:
        outbox = Outbox(store)
        outbox.due_heads(128)
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            outbox.due_heads(128)
            times.append(time.perf_counter() - began)
        return statistics.median(times)


def bench_delivery_service(orders: int) -> dict[str, float]:
    """The asyncio dispatcher at a real gateway's pace, its CPU per KCI, and the due query."""
    count = 1024 if orders >= 10_000 else 512
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'fifty.db'}"
        backlog(url, count)
        bodies = _bodies(url)
        with gateway_process(50) as base:
            delivered, wall, _ = _dispatch(url, base, 128)
            faults = _gateway_stats(base, reset=True)
            assert delivered == count * 5, delivered
            assert faults["out_of_sequence"] == faults["overlapping"] == 0, faults
            results["delivery_50ms_kcis_per_s"] = delivered / wall
            results["aiohttp_50ms_kcis_per_s"] = _bare_aiohttp(base, bodies, 128)
        results["delivery_50ms_vs_aiohttp"] = (
            results["delivery_50ms_kcis_per_s"] / results["aiohttp_50ms_kcis_per_s"]
        )
        url = f"sqlite:///{Path(tmp) / 'zero.db'}"
        backlog(url, count)
        with gateway_process(0) as base:
            delivered, _, cpu = _dispatch(url, base, 32)
            results["delivery_cpu_us_per_kci"] = cpu / delivered * 1e6
        small = f"sqlite:///{Path(tmp) / 'small.db'}"
        large = f"sqlite:///{Path(tmp) / 'large.db'}"
        backlog(small, 100)
        backlog(large, 20_000)
        results["due_query_ms_500"] = _due_query_s(small) * 1000
        results["due_query_ms_100k"] = _due_query_s(large) * 1000
        results["due_query_growth"] = results["due_query_ms_100k"] / results["due_query_ms_500"]
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--gateway":
        serve_gateway(int(sys.argv[2]), float(sys.argv[3]))
    else:
        print(json.dumps(bench_delivery_service(2_000)))
