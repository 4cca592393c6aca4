"""The dispatcher's metrics and health, for Prometheus and a load balancer or orchestrator.

``kci-engine dispatch --metrics-port PORT`` serves ``GET /metrics`` (the Prometheus text format,
every name starting ``kci_``) and ``GET /healthz`` (JSON; 200 while the dispatcher can deliver,
503 while the gateway refuses its token, no token can be had, or the database is unavailable).
The metrics live on a registry of their own, so a host application's default registry is left
alone. See docs/operations.md for the list and a sample alert rule.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class _Healthy(Protocol):
    def health(self) -> dict[str, Any]: ...


class DeliveryMetrics:
    """The dispatcher's counters, gauges and the commit-to-delivered histogram."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sends = Counter(
            "kci_sends",
            "KCI send attempts by outcome and HTTP status",
            ["outcome", "status"],
            registry=r,
        )
        self.dead_letters = Counter("kci_dead_letters", "KCIs dead-lettered", registry=r)
        self.in_flight = Gauge("kci_in_flight", "KCI requests in flight now", registry=r)
        self.latency = Histogram(
            "kci_commit_to_delivered_seconds",
            "From the KCI's commit to the gateway's 2xx",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
            registry=r,
        )
        self.token_refreshes = Counter("kci_token_refreshes", "Gateway tokens obtained", registry=r)
        self.leases_lost = Counter(
            "kci_lease_takeovers",
            "Orders this dispatcher found taken over by another at a lease renewal",
            registry=r,
        )
        self.backlog = Gauge(
            "kci_backlog", "KCIs in the outbox by delivery state", ["state"], registry=r
        )
        self.oldest = Gauge(
            "kci_oldest_undelivered_age_seconds",
            "Age of the oldest KCI not yet delivered (0 when there is none)",
            registry=r,
        )
        self.healthy = Gauge(
            "kci_dispatcher_healthy", "1 while the dispatcher can deliver, else 0", registry=r
        )

    def outbox(self, status: dict[str, Any]) -> None:
        """Record an ``SqlStore.outbox_status()`` reading."""
        for state, count in status["counts"].items():
            self.backlog.labels(state).set(count)
        age = status["oldest_undelivered_age_s"]
        self.oldest.set(0 if age is None else age)


def serve(metrics: DeliveryMetrics, source: _Healthy, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on a daemon thread; ``shutdown()`` and
    ``server_close()`` the result."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, status, kind = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
            elif path == "/healthz":
                health = source.health()
                body = json.dumps(health, sort_keys=True).encode()
                status = 200 if health["status"] == "ok" else 503
                kind = "application/json"
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes are not news

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="kci-metrics", daemon=True).start()
    return server
