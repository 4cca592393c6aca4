"""``kci-engine timeline``: what one order's tenant was told, and when."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import click

from ._common import db_option, echo, open_store


@click.command("timeline")
@click.argument("order_id")
@db_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object a line.")
def timeline(order_id: str, db_url: str, as_json: bool) -> None:
    """What did we tell the customer: every event and KCI of one order (reads only)."""
    with open_store(db_url, read_only=True) as store:
        events = store.events(order_id)
        outbox = {entry.kci.kci_id: entry for entry in store.outbox(order_id)}
    if as_json:
        for entry in events:
            line: dict[str, Any] = {
                "applied_at": entry.applied_at.astimezone(UTC).isoformat(timespec="milliseconds"),
                "event": entry.event,
                "status_before": entry.status_before or None,
                "status_after": entry.status_after,
                "kcis": [
                    {
                        "kci_id": kci_id,
                        "sequence_number": outbox[kci_id].kci.sequence_number,
                        "reason_code": outbox[kci_id].kci.reason_code.value,
                        "problem_code": outbox[kci_id].kci.body.get("problemCode"),
                        "delivery_state": outbox[kci_id].delivery_state,
                        "attempts": outbox[kci_id].attempts,
                        "last_error": outbox[kci_id].last_error,
                    }
                    for kci_id in entry.kci_ids
                ],
            }
            click.echo(json.dumps(line, sort_keys=True))  # ensure_ascii: nothing raw
        return
    echo(f"order {order_id}")
    for entry in events:
        when = entry.applied_at.astimezone(UTC).isoformat(timespec="milliseconds")
        echo(
            f"  {when}  {entry.event:<22} {entry.status_before or '-':>20} -> {entry.status_after}"
        )
        for kci_id in entry.kci_ids:
            sent = outbox[kci_id]
            kci = sent.kci
            extra = f" {kci.body['problemCode']}" if "problemCode" in kci.body else ""
            error = f"  last error: {sent.last_error}" if sent.last_error else ""
            echo(
                f"      KCI #{kci.sequence_number} {kci.reason_code.value}{extra}  "
                f"[{sent.delivery_state}, {sent.attempts} attempt(s)]  {kci.kci_id}{error}"
            )
