"""The sandbox's fault plan: which failures it injects into ``POST /v1/kcis``, and how often.

A delivery client is only as good as its handling of a misbehaving gateway, and a real gateway
misbehaves rarely and never on cue. The plan makes failures frequent and *reproducible*: every
decision comes from one seeded random generator, so the same seed and the same sequence of
requests give the same faults, and a failing test can be replayed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ...errors import ConfigurationError


class FaultKind(StrEnum):
    """A failure the sandbox can inject, named as it is written in stats and on the command line.

    - ``5xx``: the gateway fails; alternately 503 with no body and 500 with a GATEWAY_FAULT body.
    - ``slow``: the answer comes after ``slow_seconds`` (past a client's timeout), but the KCI
      *is* processed, so the client's retry must turn out to be a redelivery.
    - ``429``: too many requests, with ``Retry-After: 1``.
    - ``token_expiry``: the bearer token expires just now; 401 NOT_AUTHORISED.
    - ``drop``: the KCI is processed, then the connection is dropped without an answer.
    """

    SERVER_ERROR = "5xx"
    SLOW = "slow"
    RATE_LIMITED = "429"
    TOKEN_EXPIRY = "token_expiry"
    DROP = "drop"


ALL_FAULTS: tuple[FaultKind, ...] = tuple(FaultKind)

#: The status codes a ``5xx`` fault answers with, in turn.
SERVER_ERROR_STATUSES = (503, 500)


def parse_kinds(values: Iterable[str]) -> tuple[FaultKind, ...]:
    """The fault kinds named in ``values``, without duplicates, in the order given.

    Raises:
        ConfigurationError: naming an unknown kind and listing the known ones.
    """
    kinds: list[FaultKind] = []
    for value in values:
        name = str(value).strip()
        try:
            kind = FaultKind(name)
        except ValueError:
            known = ", ".join(k.value for k in FaultKind)
            raise ConfigurationError(f"unknown fault kind {name!r}; known kinds: {known}") from None
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


@dataclass(frozen=True)
class FaultPlan:
    """How often to inject a fault, which kinds to choose from, and the seed of the choices.

    Raises:
        ConfigurationError: for a rate outside 0..1, a negative delay or an unusable seed.
    """

    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = ALL_FAULTS
    seed: int = 0
    slow_seconds: float = 2.5

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, int | float):
            raise ConfigurationError(f"fault rate must be a number, not {self.rate!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ConfigurationError(f"fault rate must be between 0 and 1, not {self.rate}")
        object.__setattr__(self, "kinds", parse_kinds(self.kinds))
        if self.rate > 0 and not self.kinds:
            raise ConfigurationError("a fault rate above 0 needs at least one fault kind")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigurationError(f"fault seed must be an integer, not {self.seed!r}")
        if (
            isinstance(self.slow_seconds, bool)
            or not isinstance(self.slow_seconds, int | float)
            or not math.isfinite(self.slow_seconds)
            or self.slow_seconds < 0
        ):
            raise ConfigurationError(
                f"slow_seconds must be a number of seconds >= 0, not {self.slow_seconds!r}"
            )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, slow_seconds: float) -> FaultPlan:
        """A plan from the JSON of ``POST /_sandbox/faults``: ``rate``, ``kinds``, ``seed``
        (and optionally ``slow_seconds``; otherwise ``slow_seconds`` is kept).

        Absent fields take the defaults (rate 0, all kinds, seed 0).

        Raises:
            ConfigurationError: for an unknown field or a bad value.
        """
        unknown = set(data) - {"rate", "kinds", "seed", "slow_seconds"}
        if unknown:
            raise ConfigurationError(f"unknown fault plan field(s): {', '.join(sorted(unknown))}")
        kinds = data.get("kinds", [k.value for k in ALL_FAULTS])
        if isinstance(kinds, str) or not isinstance(kinds, list):
            raise ConfigurationError(f"kinds must be a list of fault kinds, not {kinds!r}")
        return cls(
            rate=data.get("rate", 0.0),
            kinds=parse_kinds(kinds),
            seed=data.get("seed", 0),
            slow_seconds=data.get("slow_seconds", slow_seconds),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "kinds": [k.value for k in self.kinds],
            "seed": self.seed,
            "slow_seconds": self.slow_seconds,
        }


@dataclass
class FaultInjector:
    """Draws the fault, if any, for each request from the plan's seeded generator."""

    plan: FaultPlan
    _random: random.Random = field(init=False, repr=False)
    _server_errors: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._random = random.Random(self.plan.seed)

    def draw(self) -> FaultKind | None:
        """The fault for the next request, or ``None`` to answer it normally."""
        if self.plan.rate <= 0.0 or self._random.random() >= self.plan.rate:
            return None
        return self._random.choice(self.plan.kinds)

    def server_error_status(self) -> int:
        """The status of the next ``5xx`` fault: 503, 500, 503, ... ."""
        status = SERVER_ERROR_STATUSES[self._server_errors % len(SERVER_ERROR_STATUSES)]
        self._server_errors += 1
        return status
