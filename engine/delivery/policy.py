"""When to try a KCI again: exponential backoff with full jitter, within a horizon."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable failures (5xx, timeouts, connection errors, 429).

    The n-th retry waits a random time between 0 and ``min(cap_s, base_s * 2**(n-1))`` ("full
    jitter", which spreads retries of many orders after an outage), and at least what the
    gateway asked for in ``Retry-After``. A KCI still undelivered ``horizon_s`` after it was
    committed is dead-lettered instead of retried; an operator re-queues it.
    """

    base_s: float = 1.0
    cap_s: float = 300.0
    horizon_s: float = 86_400.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay_s(self, attempts: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before the next try, after ``attempts`` failed ones (>= 1)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(max(attempts - 1, 0), 62))
        jittered = self.rng.uniform(0, ceiling)
        return max(jittered, retry_after_s or 0.0)

    def next_attempt_ms(
        self, attempts: int, committed_at_ms: int, now_ms: int, retry_after_s: float | None
    ) -> int | None:
        """When to try again, or ``None`` if that would pass the horizon (dead-letter it)."""
        at = now_ms + int(self.delay_s(attempts, retry_after_s) * 1000)
        if at - committed_at_ms > self.horizon_s * 1000:
            return None
        return at
