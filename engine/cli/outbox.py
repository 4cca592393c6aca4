"""``kci-engine outbox``: watch the outbox, list dead letters, re-queue them."""

from __future__ import annotations

import json

import click

from ._common import db_option, echo, open_store


@click.group()
def outbox() -> None:
    """Inspect the KCI outbox; re-queue or repair dead letters."""


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


@outbox.command("repair")
@click.argument("order_id")
@click.option(
    "--patch",
    "patch_text",
    required=True,
    help='A JSON merge patch of the refused KCI body, e.g. \'{"problemCode": "WAYLEAVE_ISSUE"}\' '
    "(null removes a field), or @FILE.",
)
@click.option("--by", help="Who repaired it (kept in the audit history).")
@db_option()
def repair(order_id: str, patch_text: str, by: str | None, db_url: str) -> None:
    """Correct ORDER_ID's dead KCI the gateway refused and send it again with the same
    sequence number (validated by the contract first); the KCIs behind it follow. The refused
    body and the gateway's answer are kept in the audit history."""
    from pathlib import Path

    from ..errors import ConfigurationError
    from ..orders import parse_kci
    from ..store.outbox import Outbox

    text = patch_text
    if patch_text.startswith("@"):
        try:
            text = Path(patch_text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read the patch {patch_text[1:]}: {exc}") from None
    try:
        patch = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"--patch is not JSON: {exc}") from None
    if not isinstance(patch, dict):
        raise ConfigurationError("--patch must be a JSON object (a merge patch of the body)")
    with open_store(db_url) as store:
        done = Outbox(store).repair(order_id, patch, validate=parse_kci, by=by)
    echo(
        f"repaired KCI {done.kci_id} (#{done.sequence_number}) of order {order_id}: "
        "it goes out next, then the KCIs behind it"
    )
