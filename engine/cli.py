"""The ``kci-engine`` command."""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .core.codes import OrderType
from .errors import EngineError
from .orders import kci_json_schema
from .tooling.sandbox.command import sandbox
from .tooling.scenarios.command import record_command, replay_command

if TYPE_CHECKING:
    from .store.sql import SqlStore

DB_HELP = "Database URL (sqlite:///FILE or postgresql+psycopg://...); env KCI_ENGINE_DB."


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str) -> None:
    """Log the engine's own records (the ``kci_engine`` loggers) to stderr at ``level``.

    Only the command does this: the library configures no logging, and the root logger is left
    alone, so Alembic's and httpx's INFO lines stay out of the output.
    """
    logger = logging.getLogger("kci_engine")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (not at creation)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kci-engine")
@click.option(
    "--log-level",
    type=click.Choice(_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="KCI_LOG_LEVEL",
    help="How much the engine logs to stderr (env KCI_LOG_LEVEL).",
)
def main(log_level: str) -> None:
    """kci-engine: order lifecycles that keep the customer informed (Fibre Cafe KCIs)."""
    configure_logging(log_level)


main.add_command(sandbox)
main.add_command(replay_command)
main.add_command(record_command)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the engine's errors into a one-line message and exit status 1."""
    try:
        yield
    except EngineError as exc:
        raise click.ClickException(exc.message) from None


@contextmanager
def _store(url: str) -> Iterator[SqlStore]:
    from .store.sql import SqlStore  # imported here: SQLAlchemy is slow to load

    store = SqlStore(url)
    try:
        yield store
    finally:
        store.close()


@main.command()
@click.option("--indent", type=click.IntRange(0, 8), default=2, show_default=True)
def schema(indent: int) -> None:
    """Print the JSON Schema of the POST /kcis body the engine sends."""
    click.echo(json.dumps(kci_json_schema(), indent=indent or None, sort_keys=True))


@main.command()
@click.option("--db", "db_url", help=DB_HELP + " Default: a new SQLite file.")
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
    """The main job end to end: sample lifecycles into a SQLite outbox, delivered by the
    dispatcher to the local sandbox gateway; prints each order's delivered timeline."""
    from .tooling.demo import run_demo, timeline

    with _errors(), tempfile.TemporaryDirectory(prefix="kci-demo-") as tmp:
        url = db_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        click.echo(f"database: {url}\nsandbox gateway: 127.0.0.1, fault rate {fault_rate:.0%}")
        run = run_demo(url, fault_rate=fault_rate, seed=seed)
    for one in run.played:
        timeline(one, click.echo, run.delivered)
    kcis = [kci for one in run.played for kci in one.kcis]
    reasons = {kci.reason_code.value for kci in kcis}
    delivered = sum(state == "DELIVERED" for state in run.delivered.values())
    stats = run.gateway_stats
    faults = ", ".join(f"{k} {v}" for k, v in stats["faults"].items() if v) or "none"
    click.echo(
        f"\n{len(kcis)} KCIs for {len(run.played)} orders; {len(reasons)} of 18 reason codes.\n"
        f"delivered {delivered}/{len(kcis)} in {run.attempts} attempts; gateway accepted "
        f"{stats['accepted']}, redeliveries {stats['redelivered']}, faults injected: {faults}; "
        f"sequence violations {stats['violations']}."
    )
    if jsonl is not None:
        try:
            with jsonl.open("w", encoding="utf-8") as out:
                for body in run.received:
                    out.write(json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
        except OSError as exc:
            raise click.ClickException(f"cannot write {jsonl}: {exc.strerror}") from None
        click.echo(f"accepted KCI bodies written to {jsonl}")


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file of settings (environment variables KCI_* override it).",
)
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--concurrency", type=int, help="Orders delivered at once (KCI_CONCURRENCY).")
@click.option("--once", is_flag=True, help="Exit when nothing is left to deliver.")
@click.option("-v", "--verbose", is_flag=True, help="Log every delivery (--log-level debug).")
def dispatch(
    config_file: Path | None,
    db_url: str | None,
    concurrency: int | None,
    once: bool,
    verbose: bool,
) -> None:
    """Deliver the outbox to the gateway: a long-lived worker (stop with SIGTERM or Ctrl-C;
    requests in flight finish). Several workers may share one PostgreSQL database."""
    from .delivery.client import GatewayClient
    from .delivery.dispatcher import Dispatcher
    from .delivery.policy import RetryPolicy
    from .delivery.settings import load_settings

    if verbose:
        logging.getLogger("kci_engine").setLevel(logging.DEBUG)
    with _errors():
        settings = load_settings(config_file, engine_db=db_url, concurrency=concurrency)
        client = GatewayClient(
            settings.gateway_url,
            settings.client_id,
            settings.client_secret,
            scope=settings.scope,
            token_auth=settings.token_auth,
            timeout_s=settings.timeout_s,
            verify_tls=settings.verify_tls,
        )
        policy = RetryPolicy(settings.retry_base_s, settings.retry_cap_s, settings.retry_horizon_s)
        with _store(settings.engine_db) as store:
            dispatcher = Dispatcher(
                store,
                client,
                policy=policy,
                concurrency=settings.concurrency,
                poll_s=settings.poll_s,
            )
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: dispatcher.stop())
            click.echo(f"dispatcher {dispatcher.me} delivering to {settings.gateway_url}", err=True)
            try:
                stats = dispatcher.run(idle_exit=once)
            finally:
                client.close()
    click.echo(
        f"delivered {stats.delivered}, retried {stats.retried}, dead-lettered {stats.dead}",
        err=True,
    )


@main.command("timeline")
@click.argument("order_id")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
def timeline_command(order_id: str, db_url: str) -> None:
    """What did we tell the customer: every event and KCI of one order."""
    with _errors(), _store(db_url) as store:
        events = store.events(order_id)
        outbox = {entry.kci.kci_id: entry for entry in store.outbox(order_id)}
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
    """Inspect the KCI outbox and re-queue dead letters."""


@outbox.command("status")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def outbox_status(db_url: str, as_json: bool) -> None:
    """Counts per delivery state and the age of the oldest undelivered KCI."""
    with _errors(), _store(db_url) as store:
        status = store.outbox_status()
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
        return
    for state, count in status["counts"].items():
        click.echo(f"{state:<10} {count}")
    age = status["oldest_undelivered_age_s"]
    click.echo(f"oldest undelivered: {'none' if age is None else f'{age:.1f} s old'}")


@outbox.command("dead-letters")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
def outbox_dead_letters(db_url: str) -> None:
    """Every KCI the gateway refused or that ran out of retries, one JSON object a line,
    with the number of the order's KCIs waiting behind it."""
    from .store.outbox import Outbox, summary

    with _errors(), _store(db_url) as store:
        letters = Outbox(store).dead_letters()
    if letters:
        click.echo(summary(letters))
    else:
        click.echo("no dead letters", err=True)


@outbox.command("retry")
@click.argument("order_id")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
def outbox_retry(order_id: str, db_url: str) -> None:
    """Re-queue ORDER_ID's dead KCIs (after fixing the cause); they go out first, in order."""
    from .store.outbox import Outbox

    with _errors(), _store(db_url) as store:
        count = Outbox(store).requeue(order_id)
    click.echo(f"re-queued {count} KCI(s) of order {order_id}")


@main.command("chart")
@click.argument("order_type", type=click.Choice([t.value for t in OrderType]))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg", "matrix"]),
    default="mermaid",
    show_default=True,
    help="Mermaid text, Graphviz DOT, an SVG (needs Graphviz) or the reason-code matrix table.",
)
def chart_command(order_type: str, fmt: str) -> None:
    """Print ORDER_TYPE's statechart or reason-code matrix, as the running engine has it
    (read-only: nothing is written; redirect it where you want it)."""
    from .tooling import diagrams

    kind = OrderType(order_type)
    with _errors():
        if fmt == "mermaid":
            text = diagrams.mermaid(kind)
        elif fmt == "dot":
            text = diagrams.dot(kind)
        elif fmt == "svg":
            text = diagrams.render_svg(diagrams.dot(kind))
        else:
            text = diagrams.matrix_markdown(kind)
    click.echo(text, nl=False)


@main.group()
def db() -> None:
    """Create or upgrade the engine's tables (Alembic migrations)."""


@db.command("upgrade")
@click.option("--db", "db_url", envvar="KCI_ENGINE_DB", required=True, help=DB_HELP)
def db_upgrade(db_url: str) -> None:
    """Bring the schema to the newest revision (safe to run while workers run)."""
    from .store.migrate import current, head, upgrade
    from .store.sql import create_db_engine

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
