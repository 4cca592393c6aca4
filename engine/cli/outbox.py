"""``kci-engine outbox``: watch the outbox, list dead letters, re-queue them."""

from __future__ import annotations

import json

import click

from ._common import db_option, echo, open_store


@click.group()
def outbox() -> None:
    """Inspect the KCI outbox and re-queue dead letters."""


@outbox.command("status")
@db_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(db_url: str, as_json: bool) -> None:
    """Counts per delivery state and the age of the oldest undelivered KCI, and the KCIs the
    Supplier API's 202 answers owe (reads only)."""
    from ..store.inbound import owed_status

    with open_store(db_url, read_only=True) as store:
        found = store.outbox_status()
        found["owed"] = owed_status(store)
    if as_json:
        click.echo(json.dumps(found, sort_keys=True))
        return
    for state, count in found["counts"].items():
        echo(f"{state:<10} {count}")
    age = found["oldest_undelivered_age_s"]
    echo(f"oldest undelivered: {'none' if age is None else f'{age:.1f} s old'}")
    owed = found["owed"]
    echo(f"owed KCIs  {owed['count']}" + "".join(
        f"\n  {o['kind']} {o['id']} of {o['order_id']} owes {o['owes']} ({o['age_s']:.1f} s)"
        for o in owed["oldest"]))  # fmt: skip


@outbox.command("dead-letters")
@db_option()
def dead_letters(db_url: str) -> None:
    """Every KCI the gateway refused or that ran out of retries, one JSON object a line,
    with the number of the order's KCIs waiting behind it (reads only)."""
    from ..store.outbox import Outbox, summary

    with open_store(db_url, read_only=True) as store:
        letters = Outbox(store).dead_letters()
    if letters:
        click.echo(summary(letters))  # JSON: control characters are escaped already
    else:
        echo("no dead letters", err=True)


@outbox.command("retry")
@click.argument("order_id")
@db_option()
def retry(order_id: str, db_url: str) -> None:
    """Re-queue ORDER_ID's dead KCIs (after fixing the cause); they go out first, in order."""
    from ..store.outbox import Outbox

    with open_store(db_url) as store:
        count = Outbox(store).requeue(order_id)
    echo(f"re-queued {count} KCI(s) of order {order_id}")
