"""Running the Supplier API: uvicorn in this thread (``kci-engine serve``) or in a background
thread for tests (:func:`running_server`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .._net import is_loopback
from ..errors import ConfigurationError, EngineError
from .app import create_app
from .auth import Authenticator
from .service import SupplierApi

log = logging.getLogger("kci_engine.inbound")
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServeConfig:
    """Where the Supplier API listens and who may call it.

    ``port`` 0 picks a free port. Without an authenticator the server answers anyone, which is
    allowed only on loopback and when ``allow_anonymous`` asks for it. Every ``settle_every_s``
    seconds the server marks the 202 debts the engine has paid.

    Raises:
        ConfigurationError: naming the setting that is wrong.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    auth: Authenticator | None = None
    allow_anonymous: bool = False
    settle_every_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigurationError(f"port must be an integer, not {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be between 0 and 65535, not {self.port}")
        if not self.settle_every_s > 0:
            raise ConfigurationError(f"settle_every_s must be > 0, not {self.settle_every_s!r}")
        if self.auth is None:
            if not self.allow_anonymous:
                raise ConfigurationError(
                    "no credentials: set KCI_SERVE_BASIC_USER and KCI_SERVE_BASIC_PASSWORD "
                    "and/or KCI_SERVE_BEARER_TOKENS (or, on loopback only, --no-auth)"
                )
            if not is_loopback(self.host):
                raise ConfigurationError(
                    f"no authentication is allowed on loopback only; host {self.host!r} is not "
                    "loopback: give credentials"
                )


@dataclass(frozen=True)
class ServerHandle:
    """A running Supplier API: ``base_url`` is e.g. ``http://127.0.0.1:PORT``."""

    base_url: str
    api: SupplierApi


def _server(api: SupplierApi, config: ServeConfig, *, configure_logging: bool) -> uvicorn.Server:
    app = create_app(api, auth=config.auth, allow_anonymous=config.allow_anonymous)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="info" if configure_logging else "warning",
            access_log=False,
            ws="none",
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=5,
            log_config=LOGGING_CONFIG if configure_logging else None,
        )
    )


def _settling(api: SupplierApi, every_s: float, done: threading.Event) -> None:
    """Every ``every_s`` seconds until ``done``, mark the 202 debts the engine has paid (so
    reading what is owed stays cheap however long the server runs)."""

    def settle() -> None:
        while not done.wait(every_s):
            try:
                api.owed()
            except EngineError as exc:
                log.warning("supplier api: could not read the owed KCIs: %s", exc.message)

    threading.Thread(target=settle, name="kci-serve-settle", daemon=True).start()


def _bound_url(server: uvicorn.Server) -> str:
    sockets = [sock for srv in server.servers for sock in (srv.sockets or ())]
    host, port = sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@contextmanager
def running_server(api: SupplierApi, config: ServeConfig) -> Iterator[ServerHandle]:
    """Run the Supplier API in a background thread for the length of the ``with`` block.

    Raises:
        ConfigurationError: for bad settings.
        EngineError: the server did not start (e.g. the port is taken).
    """
    server = _server(api, config, configure_logging=False)
    thread = threading.Thread(target=server.run, name="kci-supplier-api", daemon=True)
    thread.start()
    done = threading.Event()
    _settling(api, config.settle_every_s, done)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise EngineError(f"the Supplier API did not start on {config.host}:{config.port}")
            time.sleep(0.005)
        yield ServerHandle(_bound_url(server), api)
    finally:
        done.set()
        server.should_exit = True
        thread.join(_STOP_TIMEOUT)


def serve(api: SupplierApi, config: ServeConfig, *, ready: Callable[[str], None]) -> None:
    """Run the Supplier API in this thread until SIGINT or SIGTERM; ``ready`` gets the base URL
    once it listens.

    Raises:
        ConfigurationError: for bad settings.
        EngineError: the server could not start (e.g. the port is taken).
    """
    server = _server(api, config, configure_logging=True)
    done = threading.Event()

    def announce() -> None:
        while not server.started:
            if done.wait(0.01):
                return
        ready(_bound_url(server))

    threading.Thread(target=announce, name="kci-serve-ready", daemon=True).start()
    _settling(api, config.settle_every_s, done)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        raise EngineError(
            f"the Supplier API could not listen on {config.host}:{config.port}"
        ) from None
    finally:
        done.set()
