"""``kci-engine outbox``: watch the outbox, list dead letters, re-queue them."""

from __future__ import annotations

import json
from typing import Any

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
    "--order",
    "order_text",
    help='Corrections of the order\'s data the gateway objected to, e.g. \'{"notes": "..."}\' '
    "(each field replaced whole, null removes it; as an UPDATE event's order changes), or @FILE. "
    "The order, the dead KCI and the undelivered KCIs behind it are corrected.",
)
@click.option(
    "--characteristic",
    "characteristics",
    multiple=True,
    metavar="NAME=VALUE",
    help="A service characteristic to correct (NAME= removes it); repeatable.",
)
@click.option(
    "--patch",
    "patch_text",
    help='A JSON merge patch of the refused KCI body itself, e.g. \'{"problemCode": '
    '"WAYLEAVE_ISSUE"}\' (null removes a field), or @FILE.',
)
@click.option("--by", help="Who repaired it (kept in the audit history).")
@db_option()
def repair(
    order_id: str,
    order_text: str | None,
    characteristics: tuple[str, ...],
    patch_text: str | None,
    by: str | None,
    db_url: str,
) -> None:
    """Correct ORDER_ID's dead KCI the gateway refused and send it again with the same
    sequence number (validated by the contract first); the KCIs behind it follow. Correct the
    order's data (--order, --characteristic), the refused body (--patch), or both. The refused
    bodies and the gateway's answer are kept in the audit history."""
    from ..core.codes import OrderType
    from ..errors import ConfigurationError
    from ..orders import parse_kci, spec_of
    from ..store.outbox import Outbox

    if order_text is None and not characteristics and patch_text is None:
        raise ConfigurationError("say what to correct: --order, --characteristic or --patch")
    patch = None if patch_text is None else _json_object(patch_text, "--patch")
    order = None if order_text is None else _json_object(order_text, "--order")
    values: dict[str, str | None] = {}
    for item in characteristics:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise ConfigurationError(f"--characteristic {item!r}: expected NAME=VALUE")
        values[name] = value or None
    with open_store(db_url) as store:
        spec = None
        if order is not None or values:
            spec = spec_of(OrderType(store.load(order_id).order_type))
        done = Outbox(store).repair(
            order_id,
            patch,
            validate=parse_kci,
            order=order,
            characteristics=values or None,
            spec=spec,
            by=by,
        )
    behind = f" (and {done.behind} KCI(s) behind it)" if done.behind else ""
    echo(
        f"repaired KCI {done.kci_id} (#{done.sequence_number}) of order {order_id}{behind}: "
        "it goes out next, then the KCIs behind it"
    )


def _json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given on the command line, or ``@FILE``."""
    from pathlib import Path

    from ..errors import ConfigurationError

    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{option}: cannot read {text[1:]}: {exc}") from None
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{option} is not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise ConfigurationError(f"{option} must be a JSON object")
    return found
