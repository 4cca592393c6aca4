"""``kci-engine dispatch``: the long-lived worker that delivers the outbox to the gateway."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ConfigurationError
from ._common import db_option, echo, open_store

if TYPE_CHECKING:
    from ..delivery.metrics import DeliveryMetrics, Scans
    from ..delivery.settings import DeliverySettings
    from ..store.sql import SqlStore


class JsonLines(logging.Formatter):
    """A log record as one JSON object: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``worker``; control characters escaped by JSON itself."""

    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        return json.dumps(line, ensure_ascii=False)


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file of settings (environment variables KCI_* override it).",
)
@db_option(required=False)
@click.option("--concurrency", type=int, help="Orders delivered at once (KCI_CONCURRENCY).")
@click.option(
    "--worker-id",
    help="This dispatcher's stable name (KCI_WORKER_ID): restarted, it takes its leases back "
    "at once. Never give two running dispatchers the same one.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus /metrics and /healthz on this port (needs kci-engine[dispatch]).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address /metrics and /healthz listen on (0.0.0.0 for every interface).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object a log line (time, level, logger, message, worker), for shippers.",
)
@click.option("--once", is_flag=True, help="Exit when nothing is left to deliver.")
@click.option("-v", "--verbose", is_flag=True, help="Log every delivery (--log-level debug).")
def dispatch(
    config_file: Path | None,
    db_url: str | None,
    concurrency: int | None,
    worker_id: str | None,
    metrics_port: int | None,
    metrics_host: str,
    log_format: str,
    once: bool,
    verbose: bool,
) -> None:
    """Deliver the outbox to the gateway: a long-lived worker. SIGTERM or Ctrl-C stops it within
    a bounded time (requests in flight get a few seconds, then are abandoned and sent again
    later). Several workers may share one PostgreSQL database."""
    from ..delivery.client import GatewayClient
    from ..delivery.dispatcher import Dispatcher
    from ..delivery.policy import RetryPolicy
    from ..delivery.settings import load_settings

    if verbose:
        logging.getLogger("kci_engine").setLevel(logging.DEBUG)
    settings = load_settings(
        config_file, engine_db=db_url, concurrency=concurrency, worker_id=worker_id
    )
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
    metrics = None
    if metrics_port is not None:
        try:
            from ..delivery.metrics import DeliveryMetrics
        except ImportError:
            raise ConfigurationError(
                "--metrics-port needs prometheus-client: pip install 'kci-engine[dispatch]'"
            ) from None
        metrics = DeliveryMetrics()
    with open_store(settings.engine_db) as store, ExitStack() as running:
        running.callback(client.close)
        dispatcher = Dispatcher(
            store,
            client,
            policy=policy,
            concurrency=settings.concurrency,
            poll_s=settings.poll_s,
            lease_s=settings.lease_s,
            worker_id=settings.worker_id,
            metrics=metrics,
        )
        if metrics is not None and metrics_port is not None:
            from ..delivery.metrics import serve

            running.enter_context(_scanning(metrics, settings))
            try:
                server = serve(metrics, dispatcher, metrics_host, metrics_port)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc.strerror}"
                ) from None
            running.callback(server.server_close)
            running.callback(server.shutdown)
        if log_format == "json":
            formatter = JsonLines(dispatcher.me)
            for handler in logging.getLogger("kci_engine").handlers:
                handler.setFormatter(formatter)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: dispatcher.stop())
        echo(f"dispatcher {dispatcher.me} delivering to {settings.gateway_url}", err=True)
        stats = dispatcher.run(idle_exit=once)
    echo(
        f"delivered {stats.delivered}, retried {stats.retried}, dead-lettered {stats.dead}",
        err=True,
    )


def metric_scans(metrics: DeliveryMetrics, settings: DeliverySettings, reader: SqlStore) -> Scans:
    """The scans behind the gauges of the dispatcher's ``/metrics`` that need a pass over the
    database: the KCIs 202 answers owe and, unless ``KCI_METRICS_JEOPARDY`` is false, orders
    in jeopardy by rule (the scan of ``kci-engine jeopardy``, with ``KCI_JEOPARDY_RULES``).
    Composed here because delivery does not import history. ``reader``: a read-only store on
    the dispatcher's database.

    Raises:
        ConfigurationError: ``KCI_METRICS_SCAN_S`` is 0; the jeopardy rules cannot be read or
            their calendar's library is not installed.
    """
    from ..delivery.metrics import Scans, owed_scan

    scans = Scans(metrics, settings.metrics_scan_s)
    scans.add("owed", owed_scan(reader, metrics))
    if settings.metrics_jeopardy:
        from ..history.jeopardy import find_jeopardy, gauges, load_rules

        try:
            rules = load_rules(settings.jeopardy_rules)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"the jeopardy gauges: {exc.message} (KCI_METRICS_JEOPARDY=false leaves them out)"
            ) from None
        scans.add("jeopardy", lambda: metrics.jeopardy(gauges(find_jeopardy(reader, rules=rules))))
    return scans


@contextmanager
def _scanning(metrics: DeliveryMetrics, settings: DeliverySettings) -> Iterator[None]:
    """:func:`metric_scans` on a read-only store of their own, running while the block runs."""
    if settings.metrics_scan_s == 0:
        yield
        return
    from ..store.sql import SqlStore

    reader = SqlStore(settings.engine_db, read_only=True, persistent=True)
    try:
        scans = metric_scans(metrics, settings, reader)
    except BaseException:
        reader.close()
        raise
    scans.start()
    try:
        yield
    finally:
        if scans.stop():
            reader.close()  # else a scan is still reading it: the process exit ends both
