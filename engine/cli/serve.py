"""``kci-engine serve``: the Supplier API's order management on the engine's database."""

from __future__ import annotations

import importlib
from typing import Any

import click

from ..errors import ConfigurationError
from ._common import db_option, echo, open_store


def load_logic(spec: str) -> Any:
    """The supplier logic named ``module:attribute`` (a class is instantiated without
    arguments).

    Raises:
        ConfigurationError: the name is malformed, or names nothing importable.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"--logic {spec!r}: give it as module:attribute")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"--logic {spec!r}: cannot load it ({exc})") from None
    logic = found() if isinstance(found, type) else found
    missing = [
        name
        for name in ("decide_order", "decide_amendment", "decide_cancellation")
        if not callable(getattr(logic, name, None))
    ]
    if missing:
        raise ConfigurationError(f"--logic {spec!r}: has no {', '.join(missing)}")
    return logic


@click.command("serve")
@db_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port (0: any free).")
@click.option(
    "--logic",
    "logic_spec",
    metavar="MODULE:ATTR",
    help="Your supplier logic (decide_order, decide_amendment, decide_cancellation). "
    "Default: answer every request 202 and owe its KCI.",
)
@click.option(
    "--no-cancellation-in",
    "no_cancellation_in",
    multiple=True,
    metavar="STATUS",
    help="A status past your point of no return: cancellation requests there get 422 (repeatable).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Answer without authentication (loopback only). Otherwise credentials come from "
    "KCI_SERVE_BASIC_USER / KCI_SERVE_BASIC_PASSWORD and/or KCI_SERVE_BEARER_TOKENS.",
)
def serve(
    db_url: str,
    host: str,
    port: int,
    logic_spec: str | None,
    no_cancellation_in: tuple[str, ...],
    no_auth: bool,
) -> None:
    """Serve the Supplier API's order management (POST /service-orders,
    /service-order-amendments, /service-order-cancellations) on the engine's database, until
    Ctrl-C. Each answer and what it does to the order are written in one transaction."""
    from .._facade import Engine
    from ..inbound.auth import load_serve_settings
    from ..inbound.decisions import AnswerLater
    from ..inbound.service import SupplierApi

    try:
        from ..inbound.server import ServeConfig
        from ..inbound.server import serve as run
    except ImportError as exc:
        raise click.ClickException(
            f"kci-engine serve needs the serve extra ({exc.name} is missing): "
            "pip install 'kci-engine[serve]'"
        ) from None
    from ..tooling.sandbox.command import _stopped_by_signals  # the same graceful Ctrl-C

    logic = load_logic(logic_spec) if logic_spec else AnswerLater()
    auth = None if no_auth else load_serve_settings().authenticator()
    config = ServeConfig(host=host, port=port, auth=auth, allow_anonymous=no_auth)
    with open_store(db_url) as store:
        api = SupplierApi(Engine(store), logic, no_cancellation_in=no_cancellation_in)

        def ready(url: str) -> None:
            echo(f"Supplier API on {url} (POST /service-orders, /service-order-amendments, "
                 "/service-order-cancellations); Ctrl-C stops it", err=True)  # fmt: skip

        with _stopped_by_signals("Supplier API"):
            run(api, config, ready=ready)
