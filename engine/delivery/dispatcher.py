"""The dispatcher: delivers the outbox to the gateway, in sequence per order, at least once.

Policy lives here; transport in :mod:`engine.delivery.client`. For each order with a due head
KCI the dispatcher takes the order's lease, sends the head, records the outcome, and goes on to
the next KCI of that order only after the head is delivered:

- delivered (2xx): mark it, send the next;
- retryable (5xx, 429, timeout, connection error): schedule it after a jittered backoff (at
  least ``Retry-After``) and leave the order; past the horizon it is dead-lettered;
- rejected (400, 404, 422 ...): dead-letter it with the gateway's error; the order's later KCIs
  wait behind it, other orders carry on;
- unauthorised (401 after a fresh token, 403) or refused credentials: stop and report; nothing
  is marked, so nothing is lost.

Many orders are delivered at once (``concurrency`` threads); several dispatcher processes can
share one PostgreSQL database, since only the lease holder sends an order's KCIs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ..errors import CredentialsRejected
from ..store.outbox import Outbox
from ..store.sql import SqlStore, now_ms
from .client import GatewayClient, Outcome
from .policy import RetryPolicy

log = logging.getLogger("kci_engine.delivery")


@dataclass
class DispatchStats:
    """What a dispatcher did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    attempts: int = 0
    stopped_by: str | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def add(self, other: DispatchStats) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        self.attempts += other.attempts
        self.latencies_ms.extend(other.latencies_ms)


class Dispatcher:
    """Delivers a store's outbox through a :class:`GatewayClient`.

    Args:
        store: the SQL store holding the outbox.
        client: the gateway client.
        policy: the retry policy.
        concurrency: orders delivered at once.
        poll_s: how long to sleep when nothing is due.
        lease_s: how long an order's lease lasts without renewal (renewed per KCI).
        worker_id: this dispatcher's name in the lease table (default: host, pid, random).
    """

    def __init__(
        self,
        store: SqlStore,
        client: GatewayClient,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 8,
        poll_s: float = 0.5,
        lease_s: float = 120.0,
        worker_id: str | None = None,
    ) -> None:
        self.outbox = Outbox(store)
        self.client = client
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.me = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self.stats = DispatchStats()
        self._stats_lock = threading.Lock()
        self.error: CredentialsRejected | None = None

    def stop(self) -> None:
        """Ask the dispatcher to stop: no new KCI is sent; requests in flight finish."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        idle_exit: bool = False,
    ) -> DispatchStats:
        """Deliver until stopped, until ``until()`` is true, or (``idle_exit``) until no order
        has a pending KCI it could still deliver (orders parked behind a dead letter wait).

        Raises:
            CredentialsRejected: the gateway refused the credentials; delivery stopped.
        """
        in_flight: dict[str, Future[DispatchStats]] = {}
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="kci-dispatch") as pool:
            while not self._stop.is_set():
                if until is not None and until():
                    break
                free = self.concurrency - len(in_flight)
                if free > 0:
                    for order_id in self.outbox.due_orders(self.me, limit=free * 2):
                        if order_id not in in_flight and len(in_flight) < self.concurrency:
                            in_flight[order_id] = pool.submit(self._deliver_order, order_id)
                if not in_flight:
                    if idle_exit and self._nothing_pending():
                        break
                    self._stop.wait(self.poll_s)
                    continue
                done, _ = wait(in_flight.values(), timeout=self.poll_s, return_when=FIRST_COMPLETED)
                for order_id in [o for o, f in in_flight.items() if f in done]:
                    self._collect(in_flight.pop(order_id))
            for future in in_flight.values():
                self._collect(future)
        if self.error is not None:
            self.stats.stopped_by = self.error.message
            raise self.error
        return self.stats

    def _collect(self, future: Future[DispatchStats]) -> None:
        try:
            result = future.result()
        except CredentialsRejected as exc:
            self.error = exc
            self._stop.set()
            return
        with self._stats_lock:
            self.stats.add(result)

    def _nothing_pending(self) -> bool:
        return self.outbox.deliverable() == 0

    def _deliver_order(self, order_id: str) -> DispatchStats:
        """Send the order's due KCIs in sequence while this dispatcher holds its lease."""
        try:
            return self._deliver(order_id)
        finally:
            self.outbox.store.release_connection()  # worker threads come and go with runs

    def _deliver(self, order_id: str) -> DispatchStats:
        stats = DispatchStats()
        if not self.outbox.claim(order_id, self.me, self.lease_s):
            return stats
        try:
            while not self._stop.is_set():
                head = self.outbox.head(order_id)
                if head is None or head.delivery_state != "PENDING":
                    break
                now = now_ms()
                if head.next_attempt_at_ms > now:
                    break
                started = time.perf_counter()
                try:
                    attempt = self.client.send(head.body, head.conversation_id)
                except CredentialsRejected as exc:
                    self.outbox.note(head.kci_id, exc.message)
                    raise
                stats.attempts += 1
                if attempt.outcome is Outcome.DELIVERED:
                    self.outbox.delivered(head.kci_id, order_id, self.me, self.lease_s)
                    stats.delivered += 1
                    stats.latencies_ms.append(now_ms() - head.created_at_ms)
                    log.debug(
                        "delivered %s #%d in %.1f ms",
                        order_id,
                        head.sequence_number,
                        (time.perf_counter() - started) * 1000,
                    )
                    continue
                if attempt.outcome is Outcome.UNAUTHORISED:
                    error = f"{attempt.error} (X-Request-ID {attempt.request_id})"
                    self.outbox.note(head.kci_id, error)
                    raise CredentialsRejected(f"the gateway refused the credentials: {error}")
                error = f"{attempt.error} (X-Request-ID {attempt.request_id})"
                if attempt.outcome is Outcome.REJECTED:
                    self.outbox.dead(head.kci_id, error)
                    stats.dead += 1
                    log.warning("dead-lettered %s #%d: %s", order_id, head.sequence_number, error)
                    break
                next_at = self.policy.next_attempt_ms(
                    head.attempts + 1, head.created_at_ms, now, attempt.retry_after_s
                )
                if next_at is None:
                    self.outbox.dead(head.kci_id, f"gave up after the retry horizon: {error}")
                    stats.dead += 1
                else:
                    self.outbox.retry_later(head.kci_id, next_at, error)
                    stats.retried += 1
                break
        finally:
            self.outbox.release(order_id, self.me)
        return stats
