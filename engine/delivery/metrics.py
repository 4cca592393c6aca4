"""The dispatcher's metrics and health, for Prometheus and a load balancer or orchestrator.

``kci-engine dispatch --metrics-port PORT`` serves ``GET /metrics`` (the Prometheus text format,
every name starting ``kci_``) and ``GET /healthz`` (JSON; 200 while the dispatcher can deliver,
503 while the gateway refuses its token, no token can be had, or the database is unavailable).
The metrics live on a registry of their own, so a host application's default registry is left
alone. See docs/operations.md for the list and a sample alert rule.

Some gauges need a scan of the database too slow for the dispatcher's event loop: orders in
jeopardy by rule (a pass over every order) and the KCIs 202 answers owe. :class:`Scans` takes
them every ``interval_s`` on a thread of its own, with a read-only store, so delivery never
waits for them; a scan that fails is counted and said once in the log, and its gauges keep
their last values. The jeopardy scan belongs to :mod:`kci_engine.history`, which delivery does
not import: whoever builds the dispatcher hands it over as a callable (``kci-engine dispatch``
does).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import ConfigurationError, EngineError
from ..store.inbound import KINDS, Owed, ledger_for, owed_kcis
from ..store.sql import SqlStore

log = logging.getLogger("kci_engine.delivery")

#: A scan: reads the database and sets its gauges; what it raises is counted, not propagated.
Scan = Callable[[], None]


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
        self.jeopardy_orders = Gauge(
            "kci_jeopardy_orders", "Orders in jeopardy, by rule (last scan)", ["rule"], registry=r
        )
        self.owed_kcis = Gauge(
            "kci_owed_kcis",
            "KCIs owed by 202 answers and not yet written, by kind of request (last scan)",
            ["kind"],
            registry=r,
        )
        self._owed_since: float | None = None
        self.owed_oldest = Gauge(
            "kci_owed_oldest_age_seconds",
            "Age of the oldest KCI a 202 answer owes, at the scrape (0 when none)",
            registry=r,
        )
        self.owed_oldest.set_function(self._owed_age)
        self.scan_errors = Counter(
            "kci_scan_errors",
            "Scans that failed, by scan (their gauges keep their last values)",
            ["scan"],
            registry=r,
        )
        self.scan_succeeded = Gauge(
            "kci_scan_last_success_timestamp_seconds",
            "When each scan last succeeded (Unix time)",
            ["scan"],
            registry=r,
        )
        self.scan_seconds = Gauge(
            "kci_scan_duration_seconds",
            "How long each scan's last successful run took",
            ["scan"],
            registry=r,
        )

    def outbox(self, status: dict[str, Any]) -> None:
        """Record an ``SqlStore.outbox_status()`` reading."""
        for state, count in status["counts"].items():
            self.backlog.labels(state).set(count)
        age = status["oldest_undelivered_age_s"]
        self.oldest.set(0 if age is None else age)

    def jeopardy(self, counts: Mapping[str, int]) -> None:
        """Record a jeopardy scan's orders by rule (``kci_engine.history.jeopardy.gauges()``:
        every rule, zero included)."""
        for rule, count in counts.items():
            self.jeopardy_orders.labels(rule).set(count)

    def owed(self, found: Iterable[Owed]) -> None:
        """Record the KCIs 202 answers owe (``kci_engine.store.inbound.owed_kcis()``): the count
        for every kind of request, zero included, and when the oldest was answered."""
        counts = dict.fromkeys(KINDS, 0)
        oldest: float | None = None
        for item in found:
            counts[item.kind] = counts.get(item.kind, 0) + 1
            since = item.since.timestamp()
            oldest = since if oldest is None else min(oldest, since)
        for kind, count in counts.items():
            self.owed_kcis.labels(kind).set(count)
        self._owed_since = oldest

    def _owed_age(self) -> float:
        since = self._owed_since
        return 0.0 if since is None else max(0.0, time.time() - since)


class Scans:
    """Scans that refresh gauges, every ``interval_s`` on a daemon thread of their own: never on
    the dispatcher's event loop nor its database thread, so a slow scan delays no KCI.

    Each round runs every scan in turn; the next round starts ``interval_s`` after the last one
    ended. A scan that raises is counted (``kci_scan_errors_total{scan}``), said once in the
    log (and once more when it works again), and leaves its gauges at their last values;
    ``kci_scan_last_success_timestamp_seconds{scan}`` tells how old they are.

    Args:
        metrics: where the scans' gauges and the scans' own counters live.
        interval_s: the pause between rounds (more than 0).

    Raises:
        ConfigurationError: ``interval_s`` is not more than 0.
    """

    def __init__(self, metrics: DeliveryMetrics, interval_s: float) -> None:
        if not interval_s > 0:
            raise ConfigurationError(f"the scan interval must be more than 0 s: {interval_s}")
        self.metrics = metrics
        self.interval_s = interval_s
        self._scans: list[tuple[str, Scan]] = []
        self._failing: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, scan: Scan) -> None:
        """Run ``scan`` every round, as ``name`` in the metrics' ``scan`` label."""
        self._scans.append((name, scan))
        self.metrics.scan_errors.labels(name)  # shown as 0 from the start, for increase()

    def run_once(self) -> None:
        """One round: every scan once, on the calling thread; never raises what a scan does."""
        for name, scan in self._scans:
            if self._stopping.is_set():
                return
            began = time.monotonic()
            try:
                scan()
            except Exception as exc:  # a scan must never take the dispatcher down
                if self._stopping.is_set():
                    return  # its store was closed under it at shutdown: not news
                self._failed(name, exc)
                continue
            self.metrics.scan_seconds.labels(name).set(time.monotonic() - began)
            self.metrics.scan_succeeded.labels(name).set_to_current_time()
            if name in self._failing:
                self._failing.discard(name)
                log.warning("the %s scan works again", name)

    def _failed(self, name: str, exc: Exception) -> None:
        self.metrics.scan_errors.labels(name).inc()
        if name in self._failing:
            return
        self._failing.add(name)
        foreseen = isinstance(exc, EngineError)  # a StoreError, say: its message says it all
        why = exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "the %s scan failed (%s); its gauges keep their last values, it is tried again "
            "every %g s",
            name,
            why,
            self.interval_s,
            exc_info=not foreseen,  # a bug, perhaps: keep its traceback
        )

    def start(self) -> None:
        """Run the rounds on a daemon thread, the first at once."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="kci-metrics-scans", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout_s`` for it (a scan under way is not
        interrupted). Returns whether it has ended: if not, leave its store open; the daemon
        thread ends with the process."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.run_once()
            self._stopping.wait(self.interval_s)


def owed_scan(store: SqlStore, metrics: DeliveryMetrics) -> Scan:
    """The scan that refreshes the owed-KCI gauges from ``store``'s Supplier API ledger. It only
    reads (it marks nothing settled): give it a read-only store."""
    ledger = ledger_for(store)

    def scan() -> None:
        metrics.owed(owed_kcis(ledger, store))

    return scan


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
