"""Everything the sandbox gateway remembers: tokens, each order's KCI timeline, and the stats.

The HTTP layer (:mod:`engine.sandbox.app`) only translates; every rule about *history* lives
here, so a test can drive the state directly and read it back through the running server's
handle. Each public method runs as one critical section under a lock and never awaits, so the
asyncio event loop and a test thread reading stats always see a consistent state. The lock is a
``threading.Lock`` rather than an ``asyncio.Lock`` because readers live in other threads; it is
held for a few microseconds and never across an ``await``, so it never stalls the loop.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from ...core.wire import KciBody, dump_json
from ...orders import SPECS
from .faults import FaultInjector, FaultKind, FaultPlan

log = logging.getLogger("kci_engine.sandbox")

REJECTED_STATUSES = (400, 401, 422)


def order_key(body: Mapping[str, Any]) -> str:
    """The sandbox's key for the order a KCI body is about: the engine's own default key for
    its order type (``TENANT:id`` for a tenant-placed order, the ``supplierOrderReference`` of an
    unsolicited cease, which the tenant gave no id), else ``:id``.

    Raises:
        ValueError: when the body carries no order property or the order no identifier (a body
            that :func:`kci_engine.orders.parse_kci` accepted always has both).
    """
    for spec in SPECS.values():
        order = body.get(spec.kci_property)
        if isinstance(order, Mapping):
            key = spec.default_key(order)
            if key is not None:
                return key
            if order.get("id") is not None:
                return f":{order['id']}"  # no tenant: kept apart from supplier references
    raise ValueError("the KCI body identifies no order")


class Verdict(Enum):
    """What became of a KCI that passed the one-body validation."""

    ACCEPTED = "accepted"
    REDELIVERED = "redelivered"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    message: str = ""


@dataclass(slots=True)
class _Timeline:
    """One order's accepted KCIs: sequence numbers 1..n in order, so ``n == len(bodies)``."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    kci_ids: list[str] = field(default_factory=list)
    last_issued_on: datetime | None = None


def _zero_stats() -> dict[str, Any]:
    return {
        "accepted": 0,
        "redelivered": 0,
        "rejected": {str(status): 0 for status in REJECTED_STATUSES},
        "violations": 0,
        "faults": {kind.value: 0 for kind in FaultKind},
        "tokens_issued": 0,
        "reloaded": 0,
    }


class SandboxState:
    """The sandbox gateway's memory.

    Args:
        client_id / client_secret: the only credentials the token endpoint accepts.
        token_ttl: lifetime of an issued token, in seconds.
        faults: the fault plan to start with (and to go back to on :meth:`reset`).
        record: a file to append each first acceptance to, one compact JSON line each. What it
            already holds is read back first, so a restarted sandbox remembers every KCI it
            accepted before (it does not answer "leaves a gap" to orders under way).
        latency_ms / jitter_ms: every ``POST /kcis`` is answered after ``latency_ms``, give or
            take a uniform ``jitter_ms`` (a real gateway's pace).
        clock: a monotonic clock in seconds (tests replace it to expire tokens).
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_ttl: int = 3600,
        faults: FaultPlan | None = None,
        record: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret
        self.token_ttl = token_ttl
        self._initial_plan = faults or FaultPlan()
        self._clock = clock
        self._lock = threading.Lock()
        self._record: TextIO | None = None
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self._pace = random.Random()
        self._clear()
        if record is not None:
            self.reloaded, unended = self._reload(record)
            self._stats["reloaded"] = self.reloaded
            self._record = record.open("a", encoding="utf-8")
            if unended:
                self._record.write("\n")
                self._record.flush()

    reloaded = 0

    def _reload(self, record: Path) -> tuple[int, bool]:
        """Take back the KCIs an earlier run accepted, from its record file: how many, and
        whether the last line still wants its newline.

        A sandbox killed while writing a line leaves it unfinished. Its KCI was never answered
        (the 204 goes out once the line is flushed): a fragment is cut off the file, so the next
        acceptance starts a line of its own instead of being glued to it and forgotten at the
        next restart; a whole KCI is taken back (its sender will send it again and be told it is
        a redelivery) and its line ended.
        """
        from ...orders import parse_kci

        try:
            data = record.read_bytes()
        except FileNotFoundError:
            return 0, False
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the last line is ended
        unended = False
        if tail:
            if self._parse(tail, parse_kci) is not None:
                lines.append(tail)
                unended = True
            else:
                with record.open("r+b") as file:
                    file.truncate(len(data) - len(tail))
                log.warning(
                    "%s: cut off an unfinished last line (%d bytes): the sandbox was stopped "
                    "while it wrote it, before it answered",
                    record,
                    len(tail),
                )
        count = 0
        skipped: list[int] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parsed = self._parse(line, parse_kci)
            if parsed is None:
                skipped.append(number)
                continue
            body, kci = parsed
            timeline = self._timelines.setdefault(order_key(body), _Timeline())
            timeline.bodies.append(body)
            timeline.kci_ids.append(str(kci.id))
            timeline.last_issued_on = kci.issued_on
            self._by_id[str(kci.id)] = body
            count += 1
        if skipped:
            log.warning(
                "%s: %d line(s) are not KCI bodies and were not taken back (first: line %d)",
                record,
                len(skipped),
                skipped[0],
            )
        return count, unended

    @staticmethod
    def _parse(
        line: bytes, parse_kci: Callable[[dict[str, Any]], KciBody]
    ) -> tuple[dict[str, Any], KciBody] | None:
        """A record line's body and KCI, or ``None`` if it is not a whole KCI body."""
        try:
            body = json.loads(line.decode("utf-8"))
            return body, parse_kci(body)
        except (ValueError, ValidationError):  # UnicodeDecodeError is a ValueError
            return None

    def delay_s(self) -> float:
        """How long to wait before answering this ``POST /kcis``."""
        if not self.latency_ms and not self.jitter_ms:
            return 0.0
        spread = self._pace.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.latency_ms + spread) / 1000

    def _clear(self) -> None:
        self._tokens: dict[str, float] = {}
        self._timelines: dict[str, _Timeline] = {}
        self._by_id: dict[str, dict[str, Any]] = {}
        self._stats = _zero_stats()
        self._faults = FaultInjector(self._initial_plan)

    # --- Tokens ----------------------------------------------------------------------------------

    def credentials_match(self, client_id: str, client_secret: str) -> bool:
        """Whether these are the sandbox's client credentials (compared in constant time)."""
        id_ok = secrets.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = secrets.compare_digest(client_secret.encode(), self._secret.encode())
        return id_ok and secret_ok

    def issue_token(self) -> str:
        """A new random bearer token, valid for ``token_ttl`` seconds."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            for old in [t for t, expiry in self._tokens.items() if expiry <= now]:
                del self._tokens[old]
            self._tokens[token] = now + self.token_ttl
            self._stats["tokens_issued"] += 1
        return token

    def token_valid(self, token: str) -> bool:
        """Whether ``token`` was issued here and has neither expired nor been invalidated."""
        expiry = self._tokens.get(token)
        return expiry is not None and self._clock() < expiry

    def expire_token(self, token: str | None) -> None:
        """Invalidate one token (the ``token_expiry`` fault)."""
        with self._lock:
            if token is not None:
                self._tokens.pop(token, None)

    def expire_tokens(self) -> int:
        """Invalidate every issued token; returns how many were still valid."""
        with self._lock:
            now = self._clock()
            valid = sum(1 for expiry in self._tokens.values() if expiry > now)
            self._tokens.clear()
        return valid

    # --- Faults ----------------------------------------------------------------------------------

    @property
    def fault_plan(self) -> FaultPlan:
        return self._faults.plan

    def set_fault_plan(self, plan: FaultPlan) -> None:
        """Replace the fault plan; its generator starts again from the plan's seed."""
        with self._lock:
            self._faults = FaultInjector(plan)

    def draw_fault(self) -> FaultKind | None:
        """The fault to inject into the next ``POST /kcis``, counted in stats."""
        with self._lock:
            kind = self._faults.draw()
            if kind is not None:
                self._stats["faults"][kind.value] += 1
        return kind

    def server_error_status(self) -> int:
        with self._lock:
            return self._faults.server_error_status()

    # --- KCIs ------------------------------------------------------------------------------------

    def count_rejected(self, status: int) -> None:
        with self._lock:
            self._stats["rejected"][str(status)] += 1

    def submit(self, body: dict[str, Any], kci: KciBody) -> Decision:
        """Apply the per-order rules to a KCI that passed the one-body validation.

        ``body`` is the decoded JSON as received and ``kci`` its parsed form. The rules: an
        order's first KCI is sequenceNumber 1 and each next one is the last plus 1; issuedOn
        never goes back; a KCI id already accepted with an equal body is a redelivery (answered
        204 again), and with another body an error. Breaking a sequencing rule counts as a
        violation; a refused KCI is counted as a 422 as well.
        """
        kci_id = str(kci.id)
        key = order_key(body)
        with self._lock:
            earlier = self._by_id.get(kci_id)
            if earlier is not None:
                if earlier == body:
                    self._stats["redelivered"] += 1
                    return Decision(Verdict.REDELIVERED)
                return self._refuse(
                    f"KCI id reused with a different body: {kci_id} was already accepted "
                    f"for order {order_key(earlier)} as sequenceNumber "
                    f"{earlier.get('sequenceNumber')}"
                )
            timeline = self._timelines.get(key)
            last = 0 if timeline is None else len(timeline.bodies)
            number = kci.sequence_number
            if number <= last:
                assert timeline is not None
                return self._refuse(
                    f"order {key}: sequenceNumber {number} was already used by KCI "
                    f"{timeline.kci_ids[number - 1]}; the next is {last + 1}"
                )
            if number > last + 1:
                first = "the first KCI of an order is 1" if last == 0 else f"the last was {last}"
                return self._refuse(
                    f"order {key}: sequenceNumber {number} leaves a gap ({first}, so the next "
                    f"is {last + 1})"
                )
            if timeline is None:
                timeline = self._timelines[key] = _Timeline()
            elif timeline.last_issued_on is not None and kci.issued_on < timeline.last_issued_on:
                return self._refuse(
                    f"order {key}: issuedOn {body.get('issuedOn')} is earlier than issuedOn "
                    f"{timeline.bodies[-1].get('issuedOn')} of sequenceNumber {last}"
                )
            timeline.bodies.append(body)
            timeline.kci_ids.append(kci_id)
            timeline.last_issued_on = kci.issued_on
            self._by_id[kci_id] = body
            self._stats["accepted"] += 1
            if self._record is not None:
                self._record.write(dump_json(body) + "\n")
                self._record.flush()
        return Decision(Verdict.ACCEPTED)

    def _refuse(self, message: str) -> Decision:
        self._stats["violations"] += 1
        return Decision(Verdict.REFUSED, message)

    # --- Reading back ----------------------------------------------------------------------------

    def timeline(self, key: str) -> list[dict[str, Any]]:
        """The bodies accepted for order ``key``, in sequence order (empty if none)."""
        with self._lock:
            timeline = self._timelines.get(key)
            return [] if timeline is None else list(timeline.bodies)

    def orders(self) -> dict[str, int]:
        """Each order with an accepted KCI, and how many it has."""
        with self._lock:
            return {key: len(t.bodies) for key, t in self._timelines.items()}

    def stats(self) -> dict[str, Any]:
        """Counters since the start or the last reset (a copy; see the module docstring)."""
        with self._lock:
            stats = dict(self._stats)
            stats["rejected"] = dict(self._stats["rejected"])
            stats["faults"] = dict(self._stats["faults"])
            stats["orders"] = len(self._timelines)
        return stats

    def reset(self) -> None:
        """Forget everything: tokens, timelines, stats; the fault plan goes back to the
        configured one, reseeded. The record file is an append-only log and is kept."""
        with self._lock:
            self._clear()

    def close(self) -> None:
        """Close the record file."""
        with self._lock:
            if self._record is not None:
                self._record.close()
                self._record = None
