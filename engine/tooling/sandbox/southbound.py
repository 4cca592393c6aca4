"""The sandbox as the gateway's southbound side: it places orders, amendments and cancellations
on a supplier's Supplier API and checks the KCIs that come back against the answers.

Every 202 owes a KCI: a create ACKNOWLEDGED or ORDER_REJECTED (or the answer of a cancellation
that overtook it); an amendment AMENDED or AMENDMENT_REJECTED naming it; a cancellation
CANCELLED or CANCELLATION_REJECTED naming it. An order that ended first (a final KCI, or a 201
cancellation) owes nothing more (decisions I7). No 201 may be followed by the KCI it replaced:
no ACKNOWLEDGED after a 201 create (nor COMMITTED after a 201 IN_PROGRESS), nothing naming an
amendment or cancellation answered 201, no CANCELLED after a 201 cancellation. The KCIs are the
ones the sandbox gateway accepted (:class:`~.state.SandboxState`), so the supplier's dispatcher
delivers them to this sandbox.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ...errors import ConfigurationError, EngineError

ORDER, AMENDMENT, CANCELLATION = "order", "amendment", "cancellation"
_ANSWERS_CREATE = {"ACKNOWLEDGED", "ORDER_REJECTED", "CANCELLED", "CANCELLATION_REJECTED"}
_ANSWERS = {
    AMENDMENT: ({"AMENDED", "AMENDMENT_REJECTED"}, "serviceOrderAmendmentId"),
    CANCELLATION: ({"CANCELLED", "CANCELLATION_REJECTED"}, "serviceOrderCancellationId"),
}
_FINAL = {"CANCELLED", "COMPLETED", "ORDER_REJECTED"}
Timeline = Callable[[str], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Sent:
    """One request placed on the supplier and its answer."""

    kind: str
    gateway_id: int
    order_gid: int
    status: int
    answer: dict[str, Any] | None


@dataclass
class SouthboundReport:
    """What was placed, what came back, and every disagreement between the two."""

    sent: list[Sent]
    problems: list[str]
    waited_s: float
    owed_left: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.owed_left

    def counts(self) -> dict[str, int]:
        """Answers by kind and status, e.g. ``{"order 201": 3, "amendment 202": 1}``."""
        return dict(sorted(Counter(f"{s.kind} {s.status}" for s in self.sent).items()))


def _order(gateway_id: int, tenant: str) -> dict[str, Any]:
    return {
        "id": gateway_id,
        "orderType": "NEW",
        "tenant": tenant,
        "address": {"id": f"1000{gateway_id:08d}", "type": "UPRN"},
        "serviceOrderItem": {
            "serviceSpecification": {"id": "FTTP-900", "name": "FTTP 900/100"},
            "serviceCharacteristics": [{"name": "LINE_PROFILE", "value": "900"}],
        },
        "primaryContact": {"name": "Ann Example", "phoneNumber": "07700900123"},
    }


class Southbound:
    """Places ``orders`` provide orders on the Supplier API at ``supplier_url``; each accepted
    one (201 or 202) gets an amendment with probability ``amend_rate`` and a cancellation with
    probability ``cancel_rate``.

    Args:
        supplier_url: the supplier's base URL (the paths are relative to it).
        headers: sent with every request (e.g. ``Authorization``).
        first_id: the first gateway order id; amendments and cancellations get their own ids.

    Raises:
        ConfigurationError: a count or rate out of range.
    """

    def __init__(
        self,
        supplier_url: str,
        *,
        orders: int,
        amend_rate: float = 0.0,
        cancel_rate: float = 0.0,
        seed: int = 0,
        tenant: str = "TENANT1",
        headers: Mapping[str, str] | None = None,
        first_id: int = 1,
    ) -> None:
        if isinstance(orders, bool) or not isinstance(orders, int) or orders < 1:
            raise ConfigurationError(f"orders must be a whole number >= 1, not {orders!r}")
        for name, rate in (("amend_rate", amend_rate), ("cancel_rate", cancel_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ConfigurationError(f"{name} must be between 0 and 1, not {rate!r}")
        self.url = supplier_url.rstrip("/")
        self.orders = orders
        self.amend_rate = amend_rate
        self.cancel_rate = cancel_rate
        self.rng = random.Random(seed)
        self.tenant = tenant
        self.headers = dict(headers or {})
        self.first_id = first_id

    def place(self, client: httpx.Client) -> list[Sent]:
        """Send every request, in order, and keep each answer.

        Raises:
            EngineError: the supplier cannot be reached.
        """
        sent: list[Sent] = []
        conversation = uuid.uuid4().hex
        for n in range(self.orders):
            gid = self.first_id + n
            headers = {**self.headers, "X-Conversation-ID": f"{conversation}-{gid}"}
            created = self._post(client, "/service-orders", _order(gid, self.tenant), headers)
            sent.append(Sent(ORDER, gid, gid, *created))
            if created[0] not in (201, 202):
                continue
            if self.rng.random() < self.amend_rate:
                body = {"id": 100_000 + gid, "orderId": gid, "notes": "Please ring the bell"}
                answer = self._post(client, "/service-order-amendments", body, headers)
                sent.append(Sent(AMENDMENT, 100_000 + gid, gid, *answer))
            if self.rng.random() < self.cancel_rate:
                body = {"id": 200_000 + gid, "orderId": gid, "reasonCode": "CUSTOMER_CHANGED_MIND"}
                answer = self._post(client, "/service-order-cancellations", body, headers)
                sent.append(Sent(CANCELLATION, 200_000 + gid, gid, *answer))
        return sent

    def _post(
        self, client: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any] | None]:
        sent = {**headers, "X-Request-ID": str(uuid.uuid4()), "Tenant": self.tenant}
        try:
            response = client.post(self.url + path, json=body, headers=sent)
        except httpx.HTTPError as exc:
            raise EngineError(f"the Supplier API at {self.url} cannot be reached: {exc}") from None
        try:
            answer = response.json() if response.content else None
        except ValueError:
            answer = {"unparsed": response.text[:200]}
        return response.status_code, answer if isinstance(answer, dict) else None

    def check(self, sent: list[Sent], timeline: Timeline) -> tuple[list[str], list[str]]:
        """The disagreements found so far, and the KCIs still owed (which may yet arrive)."""
        problems: list[str] = []
        owed: list[str] = []
        cancelled_by_201 = {s.order_gid for s in sent if s.kind == CANCELLATION and s.status == 201}
        for one in sent:
            kcis = timeline(f"{self.tenant}:{one.order_gid}")
            reasons = [body.get("reasonCode") for body in kcis]
            label = f"{one.kind} {one.gateway_id} (order {one.order_gid})"
            ended = one.order_gid in cancelled_by_201 or bool(_FINAL & set(reasons))
            if one.kind == ORDER:
                _check_create(one, reasons, label, problems, owed, ended=ended)
            else:
                _check_request(one, kcis, label, problems, owed, ended=ended)
        return problems, owed

    def run(
        self, timeline: Timeline, *, wait_s: float = 30.0, poll_s: float = 0.1
    ) -> SouthboundReport:
        """Place every request, then wait up to ``wait_s`` for the owed KCIs to arrive."""
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            sent = self.place(client)
        while True:
            problems, owed = self.check(sent, timeline)
            if not owed or time.monotonic() - started > wait_s:
                break
            time.sleep(poll_s)
        return SouthboundReport(sent, problems, round(time.monotonic() - started, 3), owed)


def _check_create(
    one: Sent,
    reasons: list[Any],
    label: str,
    problems: list[str],
    owed: list[str],
    *,
    ended: bool,
) -> None:
    if one.status == 202:
        if not reasons:
            if not ended:  # else a 201 cancellation ended it before any KCI
                owed.append(f"{label}: answered 202, owes ACKNOWLEDGED or ORDER_REJECTED")
        elif reasons[0] not in _ANSWERS_CREATE:
            problems.append(f"{label}: answered 202, but its first KCI is {reasons[0]}")
    elif one.status == 201:
        status = (one.answer or {}).get("status")
        replaced = {"ACKNOWLEDGED"} | ({"COMMITTED"} if status == "IN_PROGRESS" else set())
        if found := sorted(replaced & set(reasons)):
            problems.append(
                f"{label}: answered 201 {status}, then sent {', '.join(found)} it replaced"
            )
        if status not in ("ACKNOWLEDGED", "IN_PROGRESS"):
            problems.append(f"{label}: answered 201 with status {status!r}")
    elif reasons:
        problems.append(f"{label}: answered {one.status}, yet KCIs followed: {reasons}")


def _check_request(
    one: Sent,
    kcis: list[dict[str, Any]],
    label: str,
    problems: list[str],
    owed: list[str],
    *,
    ended: bool,
) -> None:
    answers, id_field = _ANSWERS[one.kind]
    naming = [
        body.get("reasonCode")
        for body in kcis
        if any(
            isinstance(order, dict) and order.get(id_field) == one.gateway_id
            for order in body.values()
        )
    ]
    if one.status == 202:
        if not naming:
            if not ended:  # an order that ended answers what was in flight
                owed.append(f"{label}: answered 202, owes {' or '.join(sorted(answers))}")
        elif naming[0] not in answers:
            problems.append(f"{label}: answered 202, but the KCI naming it is {naming[0]}")
    elif naming:
        problems.append(f"{label}: answered {one.status}, yet KCIs named it: {naming}")
    # A 201 cancelled the order: a CANCELLED KCI of it, whatever it names, repeats the answer.
    cancelled = any(body.get("reasonCode") == "CANCELLED" for body in kcis)
    if one.kind == CANCELLATION and one.status == 201 and cancelled:
        problems.append(f"{label}: answered 201, and a CANCELLED KCI was sent as well")


# --- the command's side: kci-engine sandbox --supplier-url URL ------------------------------------


def southbound_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``kci-engine sandbox`` that turn on the southbound side."""
    import click

    options = [
        click.option(
            "--supplier-url",
            metavar="URL",
            help="Also play the gateway's southbound side: place orders, amendments and "
            "cancellations on this Supplier API and check the KCIs that come back, then exit.",
        ),
        click.option(
            "--orders", type=click.IntRange(min=1), default=20, show_default=True,
            help="Orders to place (with --supplier-url).",
        ),
        click.option(
            "--amend-rate", type=click.FloatRange(0, 1), default=0.3, show_default=True,
            help="Share of accepted orders that get an amendment.",
        ),
        click.option(
            "--cancel-rate", type=click.FloatRange(0, 1), default=0.2, show_default=True,
            help="Share of accepted orders that get a cancellation request.",
        ),
        click.option(
            "--supplier-token", envvar="KCI_SUPPLIER_TOKEN", show_envvar=True,
            help="Bearer token for the Supplier API.",
        ),
        click.option(
            "--wait", "wait_s", type=click.FloatRange(min=0), default=60, show_default=True,
            help="Seconds to wait for the KCIs the 202 answers owe.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def run_southbound(
    config: Any,
    *,
    supplier_url: str,
    orders: int,
    amend_rate: float,
    cancel_rate: float,
    supplier_token: str | None,
    wait_s: float,
    echo: Callable[[str], None],
) -> bool:
    """Run the sandbox gateway in the background while placing requests on ``supplier_url``;
    print what was answered and every disagreement. Returns whether there was none.

    Raises:
        EngineError: the sandbox could not start or the supplier cannot be reached.
    """
    from .server import running_sandbox

    headers = {"Authorization": f"Bearer {supplier_token}"} if supplier_token else {}
    southbound = Southbound(
        supplier_url,
        orders=orders,
        amend_rate=amend_rate,
        cancel_rate=cancel_rate,
        seed=config.seed,
        headers=headers,
    )
    with running_sandbox(config) as gateway:
        echo(f"sandbox gateway: {gateway.base_url} (deliver the supplier's KCIs here)")
        echo(f"placing {orders} orders on {supplier_url}")
        report = southbound.run(gateway.state.timeline, wait_s=wait_s)
    counts = ", ".join(f"{k} x{v}" for k, v in report.counts().items())
    echo(f"answers: {counts}")
    for line in report.problems:
        echo(f"DISAGREES  {line}")
    for line in report.owed_left:
        echo(f"NEVER CAME {line}")
    if report.ok:
        echo(f"no disagreements; every KCI owed arrived within {report.waited_s:.1f} s")
    return report.ok
