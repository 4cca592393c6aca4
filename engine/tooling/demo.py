"""Built-in sample lifecycles: together they cover every order type and all 18 reason codes.

``kci-engine demo`` replays them; the tests check their coverage, so a sample cannot silently
stop sending a reason code.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._facade import Engine
from ..core.codes import OrderType
from ..core.events import Event
from ..core.records import Kci
from ..errors import EngineError
from ..orders import SPECS
from .sandbox.southbound import Sent, Southbound, SouthboundReport
from .testing import (
    COMMIT_DATES,
    cease_order,
    modify_order,
    provide_order,
    unsolicited_cease_order,
)

Step = tuple[Event, dict[str, Any] | None]


@dataclass(frozen=True)
class Sample:
    """One order's lifecycle: how it starts, and the supplier events that follow."""

    title: str
    order_type: OrderType
    order: dict[str, Any]
    steps: tuple[Step, ...]
    answered_with: str | None = None
    conversation_id: str | None = field(default=None)


_NEW_SLOT = {
    "appointmentTimeslot": {
        "timeslotStartDateTime": "2026-12-03T08:00:00.000Z",
        "timeslotEndDateTime": "2026-12-03T13:00:00.000Z",
        "classification": "WEEKDAY_AM",
    },
    "appointmentSupplierReference": "APPT-88",
    "targetDate": "2026-12-03T13:00:00.000Z",
}


def _ref(n: int) -> dict[str, Any]:
    return {"order": {"supplierOrderReference": f"SUP-{n}"}}


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "Provide: delayed by a wayleave, reappointed after an amendment, completed",
        OrderType.PROVIDE,
        provide_order(1001),
        (
            (Event.ACKNOWLEDGE, _ref(1001)),
            (Event.COMMIT, {"order": COMMIT_DATES}),
            (Event.WARN, {"problem_code": "NETWORK_ISSUE", "text": "Local node maintenance"}),
            (Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE", "text": "Wayleave needed at pole"}),
            (Event.RESUME, None),
            (Event.REQUEST_REAPPOINTMENT, {"problem_code": "ACCESS_ISSUE", "text": "No access"}),
            (Event.AMENDMENT_RECEIVED, {"amendment_id": 501}),
            (
                Event.ACCEPT_AMENDMENT,
                {"amendment_id": 501, "order": {"appointmentReservationId": 78}},
            ),
            (Event.REAPPOINTED, {"order": _NEW_SLOT}),
            (Event.UPDATE, {"order": {"notes": "Engineer confirmed for the morning slot"}}),
            (Event.ADD_INFORMATION, {"service_characteristics": {"SERVICE_ID": "SVC-1001"}}),
            (Event.COMPLETE, None),
        ),
    ),
    Sample(
        "Provide: rejected before acknowledgement",
        OrderType.PROVIDE,
        provide_order(1002),
        (
            (
                Event.REJECT,
                {"problem_code": "INVALID_REQUEST", "text": "Address is not on our network"},
            ),
        ),
    ),
    Sample(
        "Provide: committed synchronously (201), then cancelled by the supplier",
        OrderType.PROVIDE,
        provide_order(1003, supplierOrderReference="SUP-1003", **COMMIT_DATES),
        (
            (Event.DELAY, {"problem_code": "SURVEY_REQUIRED", "text": "Survey booked"}),
            (
                Event.CANCEL,
                {"problem_code": "CAPACITY_ISSUE", "text": "No fibre route to the premises"},
            ),
        ),
        answered_with="IN_PROGRESS",
    ),
    Sample(
        "Modify: information requested, first amendment rejected, second accepted",
        OrderType.MODIFY,
        modify_order(2001, supplierOrderReference="SUP-2001"),
        (
            (Event.COMMIT, {"order": COMMIT_DATES}),
            (
                Event.REQUEST_INFORMATION,
                {"problem_code": "COST_ISSUE", "text": "Chargeband too low"},
            ),
            (Event.AMENDMENT_RECEIVED, {"amendment_reference": "AMD-1"}),
            (
                Event.REJECT_AMENDMENT,
                {
                    "amendment_reference": "AMD-1",
                    "problem_code": "INVALID_REQUEST",
                    "text": "TRC_CHARGEBAND must be B or higher",
                },
            ),
            (
                Event.REQUEST_RESUBMISSION,
                {"problem_code": "INVALID_REQUEST", "text": "Resubmit with TRC_CHARGEBAND B"},
            ),
            (Event.AMENDMENT_RECEIVED, {"amendment_reference": "AMD-2"}),
            (
                Event.ACCEPT_AMENDMENT,
                {
                    "amendment_reference": "AMD-2",
                    "service_characteristics": {"TRC_CHARGEBAND": "B"},
                },
            ),
            (Event.COMPLETE, None),
        ),
        answered_with="ACKNOWLEDGED",
    ),
    Sample(
        "Cease: cancellation request rejected, then completed",
        OrderType.CEASE,
        cease_order(3001),
        (
            (Event.ACKNOWLEDGE, _ref(3001)),
            (Event.CANCELLATION_RECEIVED, {"cancellation_id": 901, "cancellation_reason": "OTHER"}),
            (
                Event.REJECT_CANCELLATION,
                {
                    "cancellation_id": 901,
                    "problem_code": "OTHER",
                    "text": "Past the point of no return",
                },
            ),
            (Event.COMMIT, {"order": COMMIT_DATES}),
            (Event.COMPLETE, None),
        ),
    ),
    Sample(
        "Cease: cancelled at the tenant's request",
        OrderType.CEASE,
        cease_order(3002),
        (
            (Event.ACKNOWLEDGE, _ref(3002)),
            (
                Event.CANCELLATION_RECEIVED,
                {"cancellation_id": 902, "cancellation_reason": "CUSTOMER_CHANGED_MIND"},
            ),
            (
                Event.ACCEPT_CANCELLATION,
                {"cancellation_id": 902, "problem_code": "CUSTOMER_CHANGED_MIND"},
            ),
        ),
    ),
    Sample(
        "Unsolicited cease: created, committed and completed",
        OrderType.UNSOLICITED_CEASE,
        unsolicited_cease_order("UC-4001"),
        ((Event.COMMIT, {"order": COMMIT_DATES}), (Event.COMPLETE, None)),
    ),
    Sample(
        "Unsolicited cease: the tenant says the end user never agreed, cancelled",
        OrderType.UNSOLICITED_CEASE,
        unsolicited_cease_order("UC-4002", status="IN_PROGRESS", **COMMIT_DATES),
        (
            (
                Event.CANCELLATION_RECEIVED,
                {"cancellation_reference": "C-77", "cancellation_reason": "NO_AUTHORISATION"},
            ),
            (
                Event.ACCEPT_CANCELLATION,
                {"cancellation_reference": "C-77", "problem_code": "NO_LONGER_REQUIRED"},
            ),
        ),
    ),
)


@dataclass(frozen=True)
class Played:
    """A sample after replay: its order id and every KCI it produced."""

    sample: Sample
    order_id: str
    kcis: list[Kci]


def play(engine: Engine, samples: tuple[Sample, ...] = SAMPLES) -> Iterator[Played]:
    """Replay ``samples`` on ``engine``, one order each."""
    for sample in samples:
        if not SPECS[sample.order_type].placed_by_tenant:
            produced = engine.create_unsolicited_cease(
                sample.order, conversation_id=sample.conversation_id
            )
            order_id = str(sample.order["supplierOrderReference"])
        else:
            order_id = engine.accept_order(
                sample.order_type,
                sample.order,
                conversation_id=sample.conversation_id,
                answered_with=sample.answered_with,
            )
            produced = []
        for event, data in sample.steps:
            produced.extend(engine.apply(order_id, event, data))
        yield Played(sample, order_id, produced)


def timeline(
    played: Played, echo: Callable[[str], None], delivered: dict[str, str] | None = None
) -> None:
    """Print one order's KCIs as a readable timeline (with delivery states, if given)."""
    echo(f"\n{played.order_id}  ({played.sample.order_type.value}) {played.sample.title}")
    if played.sample.answered_with:
        echo(f"    answered 201 {played.sample.answered_with}: no KCI owed for it")
    for kci in played.kcis:
        problem = kci.body.get("problemCode")
        text = kci.body.get("text")
        detail = "  ".join(x for x in (problem and f"[{problem}]", text and f'"{text}"') if x)
        state = f"{delivered.get(kci.kci_id, '?'):<10} " if delivered is not None else ""
        echo(
            f"  #{kci.sequence_number:<2} {state}{kci.body['issuedOn']}  "
            f"{kci.reason_code.value:<22} -> {kci.status.value:<20} {detail}"
        )


@dataclass
class DemoRun:
    """The outcome of an end-to-end demo: what was produced, delivered and received.

    ``round_trip`` is the southbound half: the requests the sandbox placed over HTTP on the
    Supplier API, their answers, and every disagreement with the KCIs that came back."""

    played: list[Played]
    delivered: dict[str, str]  # kci id -> delivery state
    attempts: int
    gateway_stats: dict[str, Any]
    received: list[dict[str, Any]]  # bodies the gateway accepted, in arrival order
    round_trip: SouthboundReport | None = None


#: The round trip's orders: a tenant of their own, so they never meet the samples' ids.
ROUND_TRIP_TENANT = "TENANT2"
ROUND_TRIP_ORDERS = 10


def run_demo(
    store_url: str,
    *,
    fault_rate: float = 0.0,
    seed: int = 7,
    timeout_s: float = 1.0,
    round_trip: int = ROUND_TRIP_ORDERS,
) -> DemoRun:
    """The main job end to end: play the samples into a durable store; start the sandbox
    gateway on loopback and the Supplier API on the same store; let the sandbox place
    ``round_trip`` orders (with amendments and cancellations) over HTTP on the Supplier API,
    answered by :class:`~.demo_supplier.DemoLogic` (some 201, some 202, some 422), whose back
    office then sends the KCIs the 202s owe; dispatch the outbox to the sandbox until every KCI
    is delivered, and check the round trip's answers against the KCIs that came back.

    Raises:
        EngineError: the store or the gateway could not be used.
    """
    import json
    import random
    import tempfile
    from pathlib import Path

    from ..delivery.client import GatewayClient
    from ..delivery.dispatcher import Dispatcher
    from ..delivery.policy import RetryPolicy
    from ..store.sql import SqlStore
    from .sandbox import SandboxConfig, running_sandbox

    store = SqlStore(store_url)
    try:
        if next(store.order_ids(), None) is not None:
            raise EngineError(
                f"the database at {store.db.url.render_as_string(hide_password=True)} "
                "already holds orders; run the demo on a new database"
            )
        played = list(play(Engine(store)))
        with tempfile.TemporaryDirectory(prefix="kci-demo-") as tmp:
            record = Path(tmp) / "received.jsonl"
            config = SandboxConfig(
                fault_rate=fault_rate, seed=seed, slow_seconds=timeout_s * 1.5, record=record
            )
            with running_sandbox(config) as gateway:
                southbound = _place_round_trip(store, round_trip, seed) if round_trip else None
                client = GatewayClient(
                    gateway.base_url, config.client_id, config.client_secret, timeout_s=timeout_s
                )
                policy = RetryPolicy(base_s=0.05, cap_s=1.0, horizon_s=600, rng=random.Random(seed))
                try:
                    stats = Dispatcher(
                        store, client, policy=policy, concurrency=4, poll_s=0.02
                    ).run(idle_exit=True)
                finally:
                    client.close()
                gateway_stats = gateway.state.stats()
                report = None
                if southbound is not None:
                    checker, sent = southbound
                    problems, owed = checker.check(sent, gateway.state.timeline)
                    report = SouthboundReport(sent, problems, 0.0, owed)
            received = [json.loads(line) for line in record.read_text().splitlines()]
        delivered = {
            entry.kci.kci_id: entry.delivery_state
            for order_id in store.order_ids()
            for entry in store.outbox(order_id)
        }
    finally:
        store.close()
    return DemoRun(played, delivered, stats.attempts, gateway_stats, received, report)


def _place_round_trip(store: Any, orders: int, seed: int) -> tuple[Southbound, list[Sent]]:
    """The southbound half: the Supplier API on ``store``; the sandbox places ``orders`` orders
    on it over HTTP; the back office then pays every debt the 202s left (in that order, so a run
    is reproducible). The KCIs go out with the rest of the outbox."""
    import httpx

    from .demo_supplier import answer_owed, running_supplier

    token = "demo-" + uuid.uuid4().hex
    with running_supplier(store, token=token, back_office=False) as supplier:
        southbound = Southbound(
            supplier.base_url,
            orders=orders,
            amend_rate=0.5,
            cancel_rate=0.3,
            seed=seed,
            tenant=ROUND_TRIP_TENANT,
            headers={"Authorization": f"Bearer {token}"},
            first_id=9001,
        )
        with httpx.Client(timeout=30) as client:
            sent = southbound.place(client)
        # Paying one debt can settle another (a cancellation's answer settles its create),
        # so pay until a round pays nothing.
        while answer_owed(supplier.api) > 0:
            continue
    return southbound, sent
