"""Benchmark of the Supplier API (kci_engine.inbound): creates answered over HTTP by uvicorn on
127.0.0.1, on a SQLite file (WAL, synchronous=FULL). Prints one JSON object on the last line.

    python tools/bench_inbound.py [--orders 1000] [--clients 8]

Each create is one transaction (the ledger row, the order, its event-log entry); half are
answered 201 (acknowledged at once), half 202. Kept apart from tools/bench.py until the lead
merges them; results are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, SqlStore(f"sqlite:///{Path(tmp) / 'b.db'}") as store:
        api = SupplierApi(Engine(store), HalfAndHalf())
        config = ServeConfig(port=0, auth=BearerTokens([TOKEN]))
        with running_server(api, config) as server, httpx.Client() as client:
            url = server.base_url + "/service-orders"
            for n in range(50):
                _post(client, url, 1_000_000 + n)  # warm up
            started = time.perf_counter()
            latencies = sorted(_post(client, url, 1 + n) for n in range(args.orders))
            elapsed = time.perf_counter() - started
            results["inbound_creates_per_s"] = round(args.orders / elapsed)
            results["inbound_create_p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 2)
            results["inbound_create_p99_ms"] = round(
                latencies[int(len(latencies) * 0.99)] * 1000, 2
            )
            started = time.perf_counter()
            for n in range(args.orders):
                _post(client, url, 1 + n)  # the gateway retrying: the same answers again
            results["inbound_replays_per_s"] = round(args.orders / (time.perf_counter() - started))
            print("sequential done", flush=True)

            def worker(k: int) -> None:
                with httpx.Client() as own:
                    for n in range(args.orders // args.clients):
                        _post(own, url, 2_000_000 + k * 100_000 + n)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            done = args.orders // args.clients * args.clients
            results["inbound_concurrent_creates_per_s"] = round(
                done / (time.perf_counter() - started)
            )
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
