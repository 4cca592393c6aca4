"""``kci-engine demo``: the main job end to end, on a new SQLite database and the sandbox."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from ._common import echo


@click.command()
@click.option(
    "--db",
    "db_url",
    help="Database URL (sqlite:///FILE or postgresql+psycopg://...). Default: a new SQLite "
    "file in a new temporary directory, kept afterwards.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 0.9),
    default=0.0,
    show_default=True,
    help="Share of requests the sandbox gateway answers with a fault.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of faults and backoff.")
@click.option(
    "--jsonl",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the KCI bodies the gateway accepted, in arrival order, one JSON object a line.",
)
def demo(db_url: str | None, fault_rate: float, seed: int, jsonl: Path | None) -> None:
    """The main job end to end: sample lifecycles into a SQLite outbox, and a round trip (the
    sandbox places orders over HTTP on the Supplier API, whose demo logic answers 201, 202 or
    422); the dispatcher delivers every KCI to the local sandbox gateway. Prints each sample's
    delivered timeline and the round trip's answers."""
    from ..tooling.demo import run_demo, timeline

    url = db_url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='kci-demo-')) / 'demo.db'}"
    echo(f"database: {url}\nsandbox gateway: 127.0.0.1, fault rate {fault_rate:.0%}")
    run = run_demo(url, fault_rate=fault_rate, seed=seed)
    for one in run.played:
        timeline(one, echo, run.delivered)
    kcis = [kci for one in run.played for kci in one.kcis]
    reasons = {kci.reason_code.value for kci in kcis}
    delivered = sum(run.delivered.get(kci.kci_id) == "DELIVERED" for kci in kcis)
    stats = run.gateway_stats
    faults = ", ".join(f"{k} {v}" for k, v in stats["faults"].items() if v) or "none"
    echo(
        f"\n{len(kcis)} KCIs for {len(run.played)} orders; {len(reasons)} of 18 reason codes.\n"
        f"delivered {delivered}/{len(kcis)} in {run.attempts} attempts; gateway accepted "
        f"{stats['accepted']}, redeliveries {stats['redelivered']}, faults injected: {faults}; "
        f"sequence violations {stats['violations']}."
    )
    trip = run.round_trip
    if trip is not None:
        answers = ", ".join(f"{k} x{v}" for k, v in trip.counts().items())
        echo(
            f"\nround trip over HTTP (sandbox -> Supplier API -> engine -> dispatcher -> sandbox): "
            f"{answers}; {len(run.delivered) - len(kcis)} KCIs the 202s owed delivered; "
            f"disagreements {len(trip.problems) + len(trip.owed_left)}."
        )
        for line in (*trip.problems, *trip.owed_left):
            echo(f"  {line}")
    if run.played:
        echo(f"\nthe database is kept: kci-engine timeline {run.played[0].order_id} --db {url}")
    if jsonl is not None:
        try:
            with jsonl.open("w", encoding="utf-8") as out:
                for body in run.received:
                    out.write(json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
        except OSError as exc:
            raise click.ClickException(f"cannot write {jsonl}: {exc.strerror}") from None
        echo(f"accepted KCI bodies written to {jsonl}")
