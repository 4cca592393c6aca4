"""``kci-engine history``: replay the stored orders through this engine's machines before a
deploy, and show the chart versions orders record."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

import click

from ..core.version import chart_summary
from ..history._scan import count
from ..history.replay import (
    OrderReplay,
    Outcome,
    ReplayTotals,
    baselines,
    chart_versions,
    replay_history,
)
from ..orders import SPECS
from ._common import db_option, echo, open_store


def parse_instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time given on the command line, as a timezone-aware datetime (UTC when it
    names no zone).

    Raises:
        click.BadParameter: it is not an ISO 8601 date or time.
    """
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-12-24T09:00:00Z)", param_hint=option
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def order_list(values: tuple[str, ...]) -> list[str] | None:
    """``--orders A,B --orders C`` as ``[A, B, C]``; ``None`` when none were given."""
    found = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return found or None


@click.group("history")
def history() -> None:
    """Replay stored orders through this engine before a deploy (reads only)."""


@history.command("version")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option(
    "--charts",
    is_flag=True,
    help="Print each chart's version and next events per status (JSON): a --baseline.",
)
def version(as_json: bool, charts: bool) -> None:
    """The chart version of each order type: a fingerprint of its chart and the contract."""
    if charts:
        summaries = {spec.order_type.value: chart_summary(spec) for spec in SPECS.values()}
        click.echo(json.dumps(summaries, indent=2, sort_keys=True))
        return
    versions = chart_versions()
    if as_json:
        click.echo(json.dumps(versions, sort_keys=True))
        return
    for order_type, fingerprint in versions.items():
        echo(f"{order_type:<18} {fingerprint}")


@history.command("replay")
@db_option()
@click.option(
    "--orders",
    "orders",
    multiple=True,
    metavar="IDS",
    help="Only these orders (comma-separated; repeatable).",
)
@click.option(
    "--since", metavar="TIME", help="Only orders with an event at or after TIME (ISO 8601)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, the totals last.")
@click.option(
    "--baseline",
    type=click.File("r", encoding="utf-8"),
    help="The deployed charts (`kci-engine history version --charts` of the running version): "
    "report open orders that would lose next events.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: when stderr is a terminal).",
)
def replay(
    db_url: str,
    orders: tuple[str, ...],
    since: str | None,
    as_json: bool,
    baseline: TextIO | None,
    progress: bool | None,
) -> None:
    """Re-run each order's stored events through this engine's machines and compare the KCIs
    with the outbox, body by body (ids and issuedOn normalised). Exit status 1 when any order
    differs or is refused (or, with --baseline, would lose next events)."""
    since_at = parse_instant(since, "--since")
    deployed = None if baseline is None else baselines(baseline.read(), source=baseline.name)
    wanted = order_list(orders)
    totals = ReplayTotals()
    show = sys.stderr.isatty() if progress is None else progress
    with open_store(db_url, read_only=True) as store:
        results: Iterator[OrderReplay] = replay_history(
            store, order_ids=wanted, since=since_at, baseline=deployed
        )
        if not as_json:
            versions = ", ".join(f"{t} {v}" for t, v in chart_versions().items())
            echo(f"chart versions: {versions}")
        if show:
            since_ms = None if since_at is None else int(since_at.timestamp() * 1000)
            total = count(store, order_ids=wanted, since_ms=since_ms)
            with click.progressbar(
                results, length=total, label="replaying", file=sys.stderr
            ) as bar:
                for result in bar:
                    _report(result, totals, as_json)
        else:
            for result in results:
                _report(result, totals, as_json)
    if as_json:
        click.echo(json.dumps({"totals": totals.to_json()}, sort_keys=True))
    else:
        counts = ", ".join(f"{o.value} {totals.outcomes[o.value]}" for o in Outcome)
        echo(f"orders replayed {totals.replayed}: {counts}")
        created = ", ".join(f"{v} {n}" for v, n in sorted(totals.created_under.items()))
        echo(f"created under: {created or '-'}")
    if totals.problems:
        sys.exit(1)


def _report(result: OrderReplay, totals: ReplayTotals, as_json: bool) -> None:
    totals.add(result)
    if result.outcome in (Outcome.IDENTICAL, Outcome.SKIPPED):
        return
    if as_json:
        click.echo(json.dumps({"order": result.to_json()}, sort_keys=True))
        return
    echo(
        f"{result.outcome.value.upper()} {result.order_id} ({result.order_type}, {result.status}, "
        f"created under {result.created_under or 'unrecorded'})"
    )
    if result.detail:
        echo(f"  {result.detail}")
    for line in result.diff:
        echo(f"    {line}")
    echo(f"  what to do: {result.advice}")
