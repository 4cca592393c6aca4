"""Supplier API benchmarks (run through tools/bench.py, ``--only inbound``, which prints them on
its JSON line).

``bench_inbound``: creates answered over HTTP by uvicorn on 127.0.0.1, on a SQLite file (WAL,
synchronous=FULL). Each create is one transaction (the ledger row, the order, its event-log
entry); half are answered 201 (acknowledged at once), half 202. One client posts them in turn
(``inbound_creates_per_s`` and the latency of each, ``inbound_create_p50_ms`` and ``_p99_ms``),
then the same again, answered from the ledger (``inbound_replays_per_s``), then eight clients at
once (``inbound_concurrent_creates_per_s``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from kci_engine import Engine
from kci_engine.inbound import (
    Acknowledge,
    AmendmentRequest,
    BearerTokens,
    CancellationRequest,
    Later,
    OrderDecision,
    OrderRequest,
    RequestDecision,
    ServeConfig,
    SupplierApi,
    running_server,
)
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import provide_order

TOKEN = "bench"
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "X-Request-ID": "bench",
    "X-Conversation-ID": "bench",
    "Tenant": "TENANT1",
}


class HalfAndHalf:
    def decide_order(self, request: OrderRequest) -> OrderDecision:
        return Later() if request.gateway_id % 2 else Acknowledge(f"S{request.gateway_id}")

    def decide_amendment(self, request: AmendmentRequest) -> RequestDecision:
        return Later()

    def decide_cancellation(self, request: CancellationRequest) -> RequestDecision:
        return Later()


def _post(client: httpx.Client, url: str, gateway_id: int) -> float:
    started = time.perf_counter()
    response = client.post(url, json=provide_order(gateway_id), headers=HEADERS)
    if response.status_code not in (201, 202):
        raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")
    return time.perf_counter() - started


def bench_inbound(orders: int) -> dict[str, float]:
    """``orders // 2`` creates one at a time, again (the gateway retrying), and as many from
    eight clients at once; per second, and the one-at-a-time latency."""
    count, clients = max(orders // 2, 200), 8
    results: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp,
        SqlStore(f"sqlite:///{Path(tmp) / 'inbound.db'}") as store,
    ):
        api = SupplierApi(Engine(store), HalfAndHalf())
        config = ServeConfig(port=0, auth=BearerTokens([TOKEN]))
        with running_server(api, config) as server, httpx.Client() as client:
            url = server.base_url + "/service-orders"
            for n in range(50):
                _post(client, url, 1_000_000 + n)  # warm up
            started = time.perf_counter()
            latencies = [_post(client, url, 1 + n) for n in range(count)]
            results["inbound_creates_per_s"] = count / (time.perf_counter() - started)
            centiles = statistics.quantiles(latencies, n=100)
            results["inbound_create_p50_ms"] = statistics.median(latencies) * 1000
            results["inbound_create_p99_ms"] = centiles[98] * 1000
            started = time.perf_counter()
            for n in range(count):
                _post(client, url, 1 + n)  # the gateway retrying: the same answers again
            results["inbound_replays_per_s"] = count / (time.perf_counter() - started)

            def worker(k: int) -> None:
                with httpx.Client() as own:
                    for n in range(count // clients):
                        _post(own, url, 2_000_000 + k * 100_000 + n)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            done = count // clients * clients
            results["inbound_concurrent_creates_per_s"] = done / (time.perf_counter() - started)
    return results


if __name__ == "__main__":
    print(json.dumps(bench_inbound(2_000)))
