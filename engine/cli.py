"""The ``kci-engine`` command."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.demo import play, timeline
from engine.errors import EngineError
from engine.facade import Engine
from engine.kci import kci_json_schema

if TYPE_CHECKING:
    from engine.store.sql import SqlStore

DB_HELP = "Database URL (sqlite:///FILE or postgresql+psycopg://...); env KCI_ENGINE_DB."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kci-engine")
def main() -> None:
    """kci-engine: order lifecycles that keep the customer informed (Fibre Cafe KCIs)."""


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the engine's errors into a one-line message and exit status 1."""
    try:
        yield
    except EngineError as exc:
        raise click.ClickException(exc.message) from None


def _store(url: str) -> SqlStore:
    from engine.store.sql import SqlStore  # imported here: SQLAlchemy is slow to load

    return SqlStore(url)


@main.command()
@click.option("--indent", type=click.IntRange(0, 8), default=2, show_default=True)
def schema(indent: int) -> None:
    """Print the JSON Schema of the POST /kcis body the engine sends."""
    click.echo(json.dumps(kci_json_schema(), indent=indent or None, sort_keys=True))


@main.command()
@click.option(
    "--db", "db_url", envvar="KCI_ENGINE_DB", help=DB_HELP + " Default: a new SQLite file."
)
@click.option(
    "--jsonl",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every KCI body, exactly as POSTed, one JSON object a line.",
)
def demo(db_url: str | None, jsonl: Path | None) -> None:
    """Replay the built-in sample lifecycles and print each order's KCI timeline."""
    with _errors(), tempfile.TemporaryDirectory(prefix="kci-demo-") as tmp:
        url = db_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        store = _store(url)
        try:
            if next(store.order_ids(), None) is not None:
                raise click.ClickException(
                    f"the database at {store.engine.url.render_as_string(hide_password=True)} "
                    "already holds orders; run the demo on a new database"
                )
            click.echo(f"database: {store.engine.url.render_as_string(hide_password=True)}")
            played = list(play(Engine(store)))
        finally:
            store.close()
    for one in played:
        timeline(one, click.echo)
    kcis = [kci for one in played for kci in one.kcis]
    reasons = sorted({kci.reason_code.value for kci in kcis})
    click.echo(
        f"\n{len(kcis)} KCIs for {len(played)} orders; {len(reasons)} of 18 reason codes sent."
    )
    if jsonl is not None:
        try:
            with jsonl.open("w", encoding="utf-8") as out:
                for kci in kcis:
                    out.write(kci.json() + "\n")
        except OSError as exc:
            raise click.ClickException(f"cannot write {jsonl}: {exc.strerror}") from None
        click.echo(f"KCI bodies written to {jsonl}")


@main.command("timeline")
@click.argument("order_id")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
def timeline_command(order_id: str, db_url: str) -> None:
    """What did we tell the customer: every event and KCI of one order."""
    with _errors():
        store = _store(db_url)
        try:
            events = store.events(order_id)
            outbox = {entry.kci.kci_id: entry for entry in store.outbox(order_id)}
        finally:
            store.close()
    click.echo(f"order {order_id}")
    for entry in events:
        when = entry.applied_at.astimezone(UTC).isoformat(timespec="milliseconds")
        click.echo(
            f"  {when}  {entry.event:<22} {entry.status_before or '-':>20} -> {entry.status_after}"
        )
        for kci_id in entry.kci_ids:
            sent = outbox[kci_id]
            kci = sent.kci
            extra = f" {kci.body['problemCode']}" if "problemCode" in kci.body else ""
            error = f"  last error: {sent.last_error}" if sent.last_error else ""
            click.echo(
                f"      KCI #{kci.sequence_number} {kci.reason_code.value}{extra}  "
                f"[{sent.delivery_state}, {sent.attempts} attempt(s)]  {kci.kci_id}{error}"
            )


@main.group()
def outbox() -> None:
    """Inspect the KCI outbox."""


@outbox.command("status")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def outbox_status(db_url: str, as_json: bool) -> None:
    """Counts per delivery state and the age of the oldest undelivered KCI."""
    with _errors():
        store = _store(db_url)
        try:
            status = store.outbox_status()
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
        return
    for state, count in status["counts"].items():
        click.echo(f"{state:<10} {count}")
    age = status["oldest_undelivered_age_s"]
    click.echo(f"oldest undelivered: {'none' if age is None else f'{age:.1f} s old'}")


@main.group()
def db() -> None:
    """Create or upgrade the engine's tables (Alembic migrations)."""


@db.command("upgrade")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
def db_upgrade(db_url: str) -> None:
    """Bring the schema to the newest revision (safe to run while workers run)."""
    from engine.store.migrate import current, head, upgrade
    from engine.store.sql import create_db_engine

    with _errors():
        engine = create_db_engine(db_url)
        try:
            before = current(engine)
            upgrade(engine)
            click.echo(f"schema: {before or 'none'} -> {head()}")
        finally:
            engine.dispose()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
