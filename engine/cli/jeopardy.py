"""``kci-engine jeopardy``: the orders a tenant is about to complain about, worst first."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from ..history.jeopardy import gauges, jeopardy, load_rules, prometheus_text
from ._common import db_option, echo, open_store
from .history import parse_instant


@click.command("jeopardy")
@db_option()
@click.option("--now", metavar="TIME", help="Judge as at TIME (ISO 8601; default: now).")
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Jeopardy rules (TOML); anything left out keeps its default.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--metrics", is_flag=True, help="Print the kci_jeopardy_orders gauges (Prometheus text)."
)
def jeopardy_command(
    db_url: str, now: str | None, rules_path: Path | None, as_json: bool, metrics: bool
) -> None:
    """Orders in jeopardy, worst first: the rule, since when, and the event that would settle
    it (reads only). Counted on the UK working-day calendar the rules name."""
    at = parse_instant(now, "--now") or datetime.now(UTC)
    rules = load_rules(rules_path)
    with open_store(db_url, read_only=True) as store:
        found = jeopardy(store, rules=rules, now=at)
    counts = gauges(found)
    if metrics:
        click.echo(prometheus_text(counts), nl=False)
        return
    if as_json:
        report = {
            "now": at.astimezone(UTC).isoformat(timespec="seconds"),
            "gauges": counts,
            "orders": [item.to_json(at) for item in found],
        }
        click.echo(json.dumps(report, sort_keys=True))
        return
    by_rule = ", ".join(f"{rule} {n}" for rule, n in counts.items())
    echo(f"{len(found)} in jeopardy at {at.astimezone(UTC):%Y-%m-%dT%H:%M}Z ({by_rule})")
    for item in found:
        overdue = _duration(item.overdue(at).total_seconds())
        echo(
            f"  {overdue:>8} over  {item.rule:<20} {item.order_id} ({item.order_type}, "
            f"{item.status})"
        )
        echo(f"           {item.detail}")
        nxt = f" [next: {', '.join(item.next_events)}]" if item.next_events else ""
        echo(f"           {item.action}{nxt}")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m"
