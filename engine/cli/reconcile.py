"""``kci-engine reconcile``: what each tenant was last told against what is true, and why."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import click

from ..history.reconcile import Reconciliation, Why, out_of_step_for, reconcile
from ._common import db_option, echo, open_store
from .history import parse_instant


@click.command("reconcile")
@db_option()
@click.option(
    "--threshold-minutes",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Exit 1 when an order has been out of step for longer than this.",
)
@click.option("--now", metavar="TIME", help="Judge as at TIME (ISO 8601; default: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, the totals last.")
def reconcile_command(
    db_url: str, threshold_minutes: float, now: str | None, as_json: bool
) -> None:
    """What each tenant was last told against what is true: the orders out of step, and why
    (in flight, undelivered, dead-lettered, owed). The status and dates last told come from the
    last KCI the gateway accepted. Reads only."""
    at = parse_instant(now, "--now") or datetime.now(UTC)
    threshold = timedelta(minutes=threshold_minutes)
    reasons: Counter[str] = Counter()
    total = late = 0
    with open_store(db_url, read_only=True) as store:
        for found in reconcile(store):
            total += 1
            past = out_of_step_for(found, at, threshold)
            late += past
            reasons.update(w.value for w in found.why)
            _report(found, at, past, as_json)
    counts = {why.value: reasons[why.value] for why in Why}
    if as_json:
        totals = {"out_of_step": total, "past_threshold": late, "why": counts}
        click.echo(json.dumps({"totals": totals}, sort_keys=True))
    else:
        by_why = ", ".join(f"{why} {n}" for why, n in counts.items())
        echo(
            f"{total} order(s) out of step ({by_why}); {late} for longer than "
            f"{threshold_minutes:g} minutes"
        )
    if late:
        sys.exit(1)


def _report(found: Reconciliation, at: datetime, past: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"order": {**found.to_json(at), "past_threshold": past}}))
        return
    mark = "!" if past else " "
    echo(f"{mark} {found.order_id} ({found.order_type}): {', '.join(w.value for w in found.why)}")
    for label, seen in (("told  ", found.told), ("actual", found.actual)):
        dates = " ".join(f"{name}={value}" for name, value in sorted(seen.dates.items()))
        echo(f"    {label} {seen.status or '(nothing yet)'} {dates} #{seen.sequence_number or '-'}")
    echo(f"    {found.detail} (since {found.since.astimezone(UTC):%Y-%m-%dT%H:%M}Z)")
