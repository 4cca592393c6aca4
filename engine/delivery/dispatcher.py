"""The dispatcher: delivers the outbox to the gateway, in sequence per order, at least once.

Policy lives here; transport in :mod:`engine.delivery.client` and :mod:`engine.delivery.aio`.
One asyncio event loop carries up to ``concurrency`` orders at once, each with at most one KCI in
flight, so an order's KCIs reach the gateway strictly in sequence. For each order with a due head
KCI the dispatcher takes the order's lease, sends the head, records the outcome, and goes on to
the next KCI of that order only once the head's delivered mark is committed:

- delivered (2xx): mark it, send the next;
- retryable (5xx, 429, timeout, connection error, no token): schedule it after a jittered
  backoff (at least ``Retry-After``) and leave the order; past the horizon it is dead-lettered;
- rejected (400, 404, 422 ...): dead-letter it with the gateway's error; the order's later KCIs
  wait behind it, other orders carry on;
- unauthorised (401 after a fresh token, 403): retried with backoff like a 5xx, and reported
  loudly (log); only credentials the token endpoint refuses stop the dispatcher
  (:class:`~kci_engine.errors.CredentialsRejected`): a restart cannot fix those.

No database connection is held while a request is in flight: the store is used from one thread
of its own, and the bookkeeping of many orders (delivered marks, retries, lease renewals and
releases) is committed together, in one short transaction per batch. A crash between a 204 and
its commit means that KCI is sent again, identically: never lost, never reordered.

Every request has a total deadline (``GatewayClient.timeout_s``), and :meth:`Dispatcher.stop`
ends a run within ``stop_grace_s`` plus the deadline of one database batch, whatever the gateway
does. A transient database fault (locked past its busy timeout, disk full) is waited out and
retried, said once in the log; the database file being deleted or replaced stops the dispatcher
(:meth:`SqlStore.verify`).

Leases: each claim bumps the order's fencing token; a lease lasts ``lease_s`` and is renewed with
every delivered mark. Before each send the dispatcher checks, on its own monotonic clock, that the
lease will outlast the request; if not it renews first, and stops for that order if someone else
has taken it over (a dispatcher paused past its lease never sends for an order it lost). A
dispatcher started again under the same ``worker_id`` takes its old leases back at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError, CredentialsRejected, EngineError, StoreBusy, StoreError
from ..store.outbox import Head, Mark, Marked, Outbox
from ..store.sql import SqlStore, now_ms
from .aio import AsyncGateway
from .client import GatewayClient, Outcome
from .policy import RetryPolicy

if TYPE_CHECKING:
    from .metrics import DeliveryMetrics

log = logging.getLogger("kci_engine.delivery")

T = TypeVar("T")

#: KCIs of an order read ahead with each delivered mark.
_READ_AHEAD = 8
#: How often a running dispatcher checks that its database file is still the one it opened.
_VERIFY_EVERY_S = 2.0


@dataclass
class DispatchStats:
    """What a dispatcher did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    attempts: int = 0
    stopped_by: str | None = None
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000), repr=False)

    def add(self, other: DispatchStats) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        self.attempts += other.attempts
        self.latencies_ms.extend(other.latencies_ms)


class _StoreThread:
    """Runs store calls one at a time on a daemon thread of its own (the store keeps one
    connection per thread), handing results back to the event loop. A daemon thread: a call
    stuck on a database lock never keeps the process from exiting after a stop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="kci-dispatch-db", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> Awaitable[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        with self._ready:
            self._calls.append((fn, future))
            self._ready.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._calls and not self._closed:
                    self._ready.wait()
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            with suppress(RuntimeError):  # a closed loop: nobody waits for this any more
                self._loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self, then: Callable[[], None] | None = None) -> None:
        """Stop after the calls queued so far (and ``then``, on the same thread)."""
        if then is not None:
            with self._ready:
                self._calls.append((then, self._loop.create_future()))
        with self._ready:
            self._closed = True
            self._ready.notify()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class Dispatcher:
    """Delivers a store's outbox through a :class:`GatewayClient`.

    Usable from synchronous code (:meth:`run` runs its own event loop) and from a running loop
    (``await dispatcher.run_async()``).

    Args:
        store: the SQL store holding the outbox.
        client: the gateway client (its ``timeout_s`` is every request's total deadline).
        policy: the retry policy.
        concurrency: orders delivered at once (one request in flight per order).
        poll_s: how long to sleep when nothing is due.
        lease_s: how long an order's lease lasts without renewal; more than twice the request
            deadline, so a lease always outlasts a request started under it.
        worker_id: this dispatcher's name in the lease table. Give a stable one (the host or
            pod name) and a restarted dispatcher takes its orders back at once; never run two
            dispatchers under one id. Default: host, pid and a random part.
        stop_grace_s: after :meth:`stop`, how long requests in flight may still finish before
            they are abandoned (an abandoned KCI stays pending and is sent again later).
        metrics: where to count sends, dead letters, latency, the backlog (needs
            ``prometheus-client``: :mod:`kci_engine.delivery.metrics`).
    """

    def __init__(
        self,
        store: SqlStore,
        client: GatewayClient,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 8,
        poll_s: float = 0.5,
        lease_s: float = 30.0,
        worker_id: str | None = None,
        stop_grace_s: float = 5.0,
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        if not 1 <= concurrency <= 4096:
            raise ConfigurationError(f"concurrency must be 1 to 4096: {concurrency}")
        if not lease_s > 2 * client.timeout_s:
            raise ConfigurationError(
                f"lease_s ({lease_s:g} s) must be more than twice the request timeout "
                f"({client.timeout_s:g} s), so that a lease outlasts every request sent under it"
            )
        self.outbox = Outbox(store)
        self.client = client
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.stop_grace_s = stop_grace_s
        self.metrics = metrics
        self._counted_at = 0.0
        self._refreshes_counted = 0
        self.me = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = DispatchStats()
        self.error: EngineError | None = None
        self.gateway: AsyncGateway | None = None
        self.in_flight = 0
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._db: _StoreThread | None = None
        self._marks: list[tuple[Mark, asyncio.Future[Marked]]] = []
        self._marks_ready: asyncio.Event | None = None
        self._store_down: str | None = None
        self._draining = False
        self._idle = False
        self._until: Callable[[], bool] | None = None
        self._verified_at = 0.0

    # --- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the dispatcher to stop (from any thread, or a signal handler): no new KCI is
        sent; requests in flight get ``stop_grace_s`` to finish."""
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        idle_exit: bool = False,
    ) -> DispatchStats:
        """Deliver until stopped, until ``until()`` is true, or (``idle_exit``) until no order
        has a pending KCI it could still deliver (orders parked behind a dead letter wait).

        Raises:
            CredentialsRejected: the token endpoint refused the credentials; delivery stopped.
            StoreError: the database file was deleted or replaced, or cannot be used at all.
        """
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(self.run_async(until=until, idle_exit=idle_exit))

    async def run_async(
        self,
        *,
        until: Callable[[], bool] | None = None,
        idle_exit: bool = False,
    ) -> DispatchStats:
        """:meth:`run`, in the running event loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._until = until
        self._wake = asyncio.Event()
        self._marks_ready = asyncio.Event()
        if self._stopping.is_set():
            self._wake.set()
        self._db = _StoreThread(loop)
        self.gateway = self.client.open_async(self.concurrency)
        committer = asyncio.create_task(self._commit_marks(), name="kci-marks")
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            await self._schedule(tasks, until, idle_exit)
        finally:
            await self._wind_down(tasks, committer)
            self._stopping.clear()
            self._draining = False
        if self.error is not None:
            self.stats.stopped_by = self.error.message
            raise self.error
        return self.stats

    # --- the schedule --------------------------------------------------------------------------

    async def _schedule(
        self,
        tasks: dict[str, asyncio.Task[None]],
        until: Callable[[], bool] | None,
        idle_exit: bool,
    ) -> None:
        try:
            await self._store(lambda: self.outbox.release_all(self.me))
            self._idle = False
            while not self._stopping.is_set() and self.error is None and not self._idle:
                if until is not None and until():
                    return
                await self._schedule_once(tasks, idle_exit)
        except (StoreBusy, StoreError):
            if self.error is None and self._done():
                return  # stopped while the database was unavailable
            raise

    async def _schedule_once(self, tasks: dict[str, asyncio.Task[None]], idle_exit: bool) -> None:
        """Start orders whose head is due, then wait for a slot, a stop or the poll interval."""
        assert self._wake is not None
        self._wake.clear()
        await self._verify()
        await self._count_outbox()
        free = self.concurrency - len(tasks)
        started = found = 0
        if free > 0:
            heads = await self._store(lambda: self.outbox.due_heads(free))
            found = len(heads)
            heads = [h for h in heads if h.order_id not in tasks][:free]
            if heads:
                ids = [h.order_id for h in heads]
                leased_at = time.monotonic()
                won = await self._store(lambda: self.outbox.claim_many(ids, self.me, self.lease_s))
                for head in heads:
                    token = won.get(head.order_id)
                    if token is not None:
                        tasks[head.order_id] = asyncio.create_task(
                            self._order(head, token, leased_at, tasks)
                        )
                        started += 1
        if self._stopping.is_set() or self.error is not None:
            return
        idle = not tasks and started == 0 and self._store_down is None
        if idle and idle_exit and await self._store(self.outbox.deliverable) == 0:
            self._idle = True
            return
        if found < free or len(tasks) >= self.concurrency:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
        # A little patience: orders that finish together are replaced by one query.
        await asyncio.sleep(0.01 if len(tasks) > self.concurrency // 2 else 0.001)

    async def _order(
        self, head: Head, token: int, leased_at: float, tasks: dict[str, asyncio.Task[None]]
    ) -> None:
        """Send the order's KCIs in sequence while its lease is held."""
        assert self.gateway is not None
        assert self._wake is not None
        queue: deque[Head] = deque([head])
        held_until = leased_at + self.lease_s
        deadline = self.client.timeout_s
        released = False
        try:
            while queue and not self._stopping.is_set() and self.error is None:
                kci = queue[0]
                if time.monotonic() + deadline + 1.0 > held_until:
                    asked = time.monotonic()
                    if not (await self._mark(Mark("renew", kci.order_id, token))).held:
                        if self.metrics is not None:
                            self.metrics.leases_lost.inc()
                        released = True  # someone else holds it now: not ours to release
                        return
                    held_until = asked + self.lease_s
                self.in_flight += 1
                metrics = self.metrics
                if metrics is not None:
                    metrics.in_flight.inc()
                try:
                    attempt = await self.gateway.send(kci.body.encode(), kci.conversation_id)
                except CredentialsRejected as exc:
                    self._fail(exc)
                    await self._mark(
                        Mark("note", kci.order_id, token, kci.kci_id, error=exc.message)
                    )
                    return
                finally:
                    self.in_flight -= 1
                    if metrics is not None:
                        metrics.in_flight.dec()
                self.stats.attempts += 1
                if metrics is not None:
                    metrics.sends.labels(attempt.outcome.value, str(attempt.status_code)).inc()
                if attempt.outcome is Outcome.DELIVERED:
                    asked = time.monotonic()
                    renew = held_until - asked < self.lease_s / 2
                    mark = Mark(
                        "delivered",
                        kci.order_id,
                        token,
                        kci.kci_id,
                        kci.sequence_number,
                        want_next=_READ_AHEAD if len(queue) == 1 else 0,
                        renew=renew,
                    )
                    marked = await self._mark(mark)
                    self.stats.delivered += 1
                    waited_ms = now_ms() - kci.created_at_ms
                    self.stats.latencies_ms.append(waited_ms)
                    if metrics is not None:
                        metrics.latency.observe(waited_ms / 1000)
                    queue.popleft()
                    if not marked.held:
                        if metrics is not None:
                            metrics.leases_lost.inc()
                        released = True
                        return
                    if renew:
                        held_until = asked + self.lease_s
                    queue.extend(_in_sequence(kci, marked.following))
                    continue
                error = f"{attempt.error} (X-Request-ID {attempt.request_id})"
                if attempt.outcome is Outcome.REJECTED:
                    mark = Mark(
                        "dead", kci.order_id, token, kci.kci_id, kci.sequence_number, error=error
                    )
                    self._count_dead()
                    log.warning(
                        "dead-lettered %s #%d: %s", kci.order_id, kci.sequence_number, error
                    )
                else:
                    mark = self._retry_mark(kci, token, error, attempt.retry_after_s)
                await self._mark(
                    Mark(
                        mark.kind,
                        mark.order_id,
                        token,
                        mark.kci_id,
                        mark.sequence_number,
                        mark.next_attempt_ms,
                        mark.error,
                        release=True,
                    )
                )
                released = True
                return
        except (StoreBusy, StoreError):
            released = True  # the database is gone or we are stopping: the lease runs out
        finally:
            tasks.pop(head.order_id, None)
            self._wake.set()
            if not released:
                await self._release(head.order_id, token)

    def _retry_mark(self, kci: Head, token: int, error: str, retry_after_s: float | None) -> Mark:
        next_at = self.policy.next_attempt_ms(
            kci.attempts + 1, kci.created_at_ms, now_ms(), retry_after_s
        )
        if next_at is None:
            self._count_dead()
            why = f"gave up after the retry horizon: {error}"
            log.warning("dead-lettered %s #%d: %s", kci.order_id, kci.sequence_number, why)
            return Mark("dead", kci.order_id, token, kci.kci_id, kci.sequence_number, error=why)
        self.stats.retried += 1
        return Mark("retry", kci.order_id, token, kci.kci_id, kci.sequence_number, next_at, error)

    def _count_dead(self) -> None:
        self.stats.dead += 1
        if self.metrics is not None:
            self.metrics.dead_letters.inc()

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` answers: ``status`` is ``ok`` while the dispatcher can deliver."""
        token = self.gateway.token_state if self.gateway is not None else "ok"
        if self.error is not None:
            status = "stopped"
        elif self._stopping.is_set():
            status = "stopping"
        elif token != "ok" or self._store_down is not None:
            status = "degraded"
        else:
            status = "ok"
        if self.metrics is not None:
            self.metrics.healthy.set(1 if status == "ok" else 0)
        return {
            "status": status,
            "worker_id": self.me,
            "token": token,
            "database": "ok" if self._store_down is None else self._store_down,
            "in_flight": self.in_flight,
            "delivered": self.stats.delivered,
        }

    async def _count_outbox(self) -> None:
        """Refresh the backlog gauges every 5 s (a count over the outbox; only with metrics)."""
        metrics = self.metrics
        if metrics is None or time.monotonic() - self._counted_at < 5.0:
            return
        self._counted_at = time.monotonic()
        metrics.outbox(await self._store(self.outbox.store.outbox_status))
        if self.gateway is not None:
            refreshes = self.gateway.token_refreshes
            metrics.token_refreshes.inc(refreshes - self._refreshes_counted)
            self._refreshes_counted = refreshes
        self.health()

    async def _release(self, order_id: str, token: int) -> None:
        with suppress(asyncio.CancelledError, StoreError, StoreBusy):  # else it runs out
            await asyncio.shield(self._mark(Mark("release", order_id, token)))

    def _fail(self, exc: EngineError) -> None:
        if self.error is None:
            self.error = exc
            log.error("delivery stopped: %s", exc.message)
        if self._wake is not None:
            self._wake.set()

    # --- the database --------------------------------------------------------------------------

    async def _store(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the store's thread; a transient fault is waited out and retried (said
        once in the log); a fault no wait can cure stops the dispatcher."""
        assert self._db is not None
        while True:
            try:
                result = await self._db.call(fn)
            except (StoreBusy, StoreError) as exc:
                await self._store_trouble(exc)
                continue
            self._store_ok()
            return result

    async def _store_trouble(self, exc: StoreBusy | StoreError) -> None:
        assert self._db is not None
        assert self._wake is not None
        try:
            await self._db.call(self.outbox.store.verify)
        except StoreError as fatal:
            self._fail(fatal)
            raise fatal from exc
        if self._store_down is None:
            self._store_down = exc.message
            log.warning(
                "the database is unavailable (%s); waiting and retrying, nothing is lost",
                exc.message,
            )
        if self._done():
            raise exc
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(self.poll_s, 0.5))

    def _done(self) -> bool:
        """Asked to stop, or ``until()`` came true."""
        return self._stopping.is_set() or (self._until is not None and self._until())

    def _store_ok(self) -> None:
        if self._store_down is not None:
            log.warning("the database is available again")
            self._store_down = None

    async def _verify(self) -> None:
        if time.monotonic() - self._verified_at < _VERIFY_EVERY_S:
            return
        self._verified_at = time.monotonic()
        assert self._db is not None
        try:
            await self._db.call(self.outbox.store.verify)
        except StoreError as exc:
            self._fail(exc)

    async def _mark(self, mark: Mark) -> Marked:
        """Queue ``mark`` for the next batch; its result once the batch is committed."""
        assert self._loop is not None
        assert self._marks_ready is not None
        future: asyncio.Future[Marked] = self._loop.create_future()
        self._marks.append((mark, future))
        self._marks_ready.set()
        return await future

    async def _commit_marks(self) -> None:
        """Commit queued marks in batches: whatever queued while the last batch committed."""
        assert self._marks_ready is not None
        while True:
            await self._marks_ready.wait()
            self._marks_ready.clear()
            if not self._marks:
                if self._draining:
                    return
                continue
            batch, self._marks = self._marks[:256], self._marks[256:]
            if self._marks:
                self._marks_ready.set()
            marks = [mark for mark, _ in batch]
            try:
                results = await self._store(
                    partial(self.outbox.commit, self.me, self.lease_s, marks)
                )
            except (StoreError, StoreBusy) as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _wind_down(
        self, tasks: dict[str, asyncio.Task[None]], committer: asyncio.Task[None]
    ) -> None:
        """Bounded: requests in flight get ``stop_grace_s``, then are abandoned; queued marks
        get one more batch; the connections are closed."""
        if tasks:
            _, pending = await asyncio.wait(list(tasks.values()), timeout=self.stop_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for task in list(tasks.values()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                error = task.exception()
                if isinstance(error, StoreError | StoreBusy | CredentialsRejected):
                    self._fail(error)
        self._stopping.set()
        self._draining = True
        assert self._marks_ready is not None
        self._marks_ready.set()
        await asyncio.wait([committer], timeout=self.stop_grace_s)
        committer.cancel()
        if self.gateway is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.gateway.aclose(), 2.0)
        assert self._db is not None
        store = self.outbox.store
        self._db.close(then=store.release_connection)
        await asyncio.to_thread(self._db.join, 1.0)
        self._loop = None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a quarter less CPU per KCI), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _in_sequence(last: Head, following: list[Head]) -> list[Head]:
    """The read-ahead KCIs that directly follow ``last``, pending, without a gap."""
    out: list[Head] = []
    expected = last.sequence_number + 1
    for head in following:
        if head.sequence_number != expected or head.delivery_state != "PENDING":
            break
        out.append(head)
        expected += 1
    return out
