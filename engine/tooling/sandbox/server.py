"""Running the sandbox gateway: its settings, a background server for tests, a foreground one
for the command.

The server is uvicorn on a socket bound here, before uvicorn starts, so that port 0 ("pick a
free port") gives a known port at once and the URL can be printed before the first request.
uvicorn uses ``httptools`` when it is installed (several times faster than ``h11``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import Scope
from uvicorn.config import LOGGING_CONFIG

from ..._net import is_loopback
from ...errors import ConfigurationError, EngineError
from .app import create_app
from .faults import ALL_FAULTS, FaultPlan, parse_kinds
from .state import SandboxState

DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"  # a well-known default: the sandbox guards nothing
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of a sandbox gateway.

    ``port`` 0 picks a free port. ``fault_kinds`` takes :class:`FaultKind` values or their names.
    A host other than loopback is refused unless ``allow_remote``: the sandbox hands a token to
    anyone with the well-known default credentials.

    Raises:
        ConfigurationError: naming the setting that is wrong.
    """

    host: str = "127.0.0.1"
    port: int = 0
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = field(default=DEFAULT_CLIENT_SECRET, repr=False)
    token_ttl: int = 3600
    fault_rate: float = 0.0
    fault_kinds: Sequence[str] = ALL_FAULTS
    seed: int = 0
    slow_seconds: float = 2.5
    record: Path | None = None
    allow_remote: bool = False
    latency_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigurationError(
                f"the sandbox listens on loopback only; host {self.host!r} is not loopback "
                "(allow it with allow_remote / --allow-remote)"
            )
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigurationError(f"port must be an integer, not {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be between 0 and 65535, not {self.port}")
        if not self.client_id or not self.client_secret:
            raise ConfigurationError("client_id and client_secret must not be empty")
        if isinstance(self.token_ttl, bool) or not isinstance(self.token_ttl, int):
            raise ConfigurationError(f"token_ttl must be whole seconds, not {self.token_ttl!r}")
        if self.token_ttl < 1:
            raise ConfigurationError(f"token_ttl must be at least 1 second, not {self.token_ttl}")
        for name in ("latency_ms", "jitter_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"{name} must be a number of milliseconds, not {value!r}")
            if not 0 <= value <= 60_000:  # also refuses NaN
                raise ConfigurationError(f"{name} must be between 0 and 60000, not {value}")
        object.__setattr__(self, "fault_kinds", parse_kinds(self.fault_kinds))
        self.fault_plan()  # validates rate, kinds, seed and slow_seconds together

    def fault_plan(self) -> FaultPlan:
        """The fault plan the sandbox starts with."""
        return FaultPlan(
            rate=self.fault_rate,
            kinds=parse_kinds(self.fault_kinds),
            seed=self.seed,
            slow_seconds=self.slow_seconds,
        )


@dataclass(frozen=True)
class SandboxHandle:
    """A running sandbox.

    Attributes:
        base_url: the Supplier Updates API base, e.g. ``http://127.0.0.1:PORT/v1``.
        root_url: the server root; the control API is under ``/_sandbox``.
        state: the gateway's state, for reading stats and timelines directly.
    """

    base_url: str
    root_url: str
    state: SandboxState
    config: SandboxConfig

    @property
    def token_url(self) -> str:
        return self.base_url + "/auth/supplier/access-token"

    @property
    def kcis_url(self) -> str:
        return self.base_url + "/kcis"


class _UvicornDropper:
    """Drops the connection of a request by aborting its transport.

    ASGI has no way for an app to abandon a connection (an app that raises before answering
    gets a 500 sent for it), so this finds the connection among uvicorn's open ones by the
    client's address and aborts it: no byte of an answer is sent.
    """

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None

    async def __call__(self, scope: Scope) -> bool:
        client = scope.get("client")
        if self.server is None or client is None:
            return False
        for connection in list(self.server.server_state.connections):
            if getattr(connection, "client", None) == tuple(client):
                transport: Any = getattr(connection, "transport", None)
                if transport is None:
                    return False
                transport.abort()
                # Let connection_lost run, so uvicorn knows the client is gone and does not
                # complain that the app returned without answering.
                await asyncio.sleep(0)
                return True
        return False


class _Sandbox:
    """A bound socket, the state, and a uvicorn server ready to run on them."""

    def __init__(self, config: SandboxConfig, *, configure_logging: bool) -> None:
        self.socket = _listen(config.host, config.port)
        host, port = self.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.root_url = f"http://{shown}:{port}"
        try:
            self.state = SandboxState(
                client_id=config.client_id,
                client_secret=config.client_secret,
                token_ttl=config.token_ttl,
                faults=config.fault_plan(),
                record=config.record,
                latency_ms=config.latency_ms,
                jitter_ms=config.jitter_ms,
            )
        except OSError as exc:
            self.socket.close()
            raise ConfigurationError(f"cannot open the record file {config.record}: {exc}") from exc
        dropper = _UvicornDropper()
        uv_config = uvicorn.Config(
            create_app(self.state, dropper=dropper),
            log_level="warning",
            access_log=False,
            ws="none",
            lifespan="off",
            # Longer than a client's keep-alive (httpx: 5 s), so the server never closes an idle
            # connection just as the client reuses it.
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
            log_config=LOGGING_CONFIG if configure_logging else None,
        )
        self.server = uvicorn.Server(uv_config)
        dropper.server = self.server

    def run(self) -> None:
        self.server.run(sockets=[self.socket])

    def close(self) -> None:
        self.socket.close()
        self.state.close()


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


@contextmanager
def running_sandbox(config: SandboxConfig | None = None) -> Iterator[SandboxHandle]:
    """Run a sandbox gateway in a background thread for the length of the ``with`` block.

    Returns once the server accepts requests; stops it (and closes the record file) on exit.

    Raises:
        ConfigurationError: for bad settings, or a host and port it cannot listen on.
        EngineError: if the server does not start.
    """
    config = config or SandboxConfig()
    sandbox = _Sandbox(config, configure_logging=False)
    thread = threading.Thread(target=sandbox.run, name="kci-sandbox", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not sandbox.server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise EngineError(f"the sandbox gateway did not start on {sandbox.root_url}")
            time.sleep(0.005)
        yield SandboxHandle(sandbox.root_url + "/v1", sandbox.root_url, sandbox.state, config)
    finally:
        sandbox.server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        sandbox.close()


def serve(config: SandboxConfig, *, ready: Callable[[str], None]) -> None:
    """Run a sandbox gateway in this thread until SIGINT or SIGTERM.

    ``ready`` is called with the base URL once the socket listens (connections made from then
    on wait for the server).

    Raises:
        ConfigurationError: for bad settings, or a host and port it cannot listen on.
    """
    sandbox = _Sandbox(config, configure_logging=True)
    try:
        ready(sandbox.root_url + "/v1")
        sandbox.run()
    finally:
        sandbox.close()
