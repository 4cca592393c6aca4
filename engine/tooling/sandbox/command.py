"""The ``kci-engine sandbox`` command: run the sandbox gateway in the foreground.

The server stack (uvicorn, Starlette) is imported only when the command runs, so the rest of
the CLI does not pay for it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ...errors import EngineError
from .faults import ALL_FAULTS
from .southbound import run_southbound, southbound_options


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGINT or SIGTERM arrived: stop serving, as Ctrl-C does."""
    raise KeyboardInterrupt


@contextmanager
def _stopped_by_signals(what: str = "sandbox gateway") -> Iterator[None]:
    """Stop quietly (exit status 0) on SIGINT or SIGTERM.

    uvicorn handles both signals while it serves, shuts down gracefully, then raises the
    signal again for the previous handler: this one, which ends the command.
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _stop) for sig in signals}
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"{what} stopped", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8780,
    show_default=True,
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of POST /v1/kcis requests that get a fault.",
)
@click.option(
    "--faults",
    "fault_kinds",
    default=",".join(k.value for k in ALL_FAULTS),
    show_default=True,
    help="Comma-separated fault kinds to choose from.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault choices.")
@click.option(
    "--slow-seconds",
    type=click.FloatRange(min=0.0),
    default=2.5,
    show_default=True,
    help="Delay of a 'slow' fault.",
)
@click.option(
    "--token-ttl",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Lifetime of an access token, in seconds.",
)
@click.option("--client-id", default="sandbox-client", show_default=True)
@click.option(
    "--client-secret",
    envvar="KCI_SANDBOX_CLIENT_SECRET",
    show_envvar=True,
    default="sandbox-secret",
    show_default=False,
    help="Client secret the token endpoint accepts (default: sandbox-secret).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append every accepted KCI body (first acceptance only) to FILE as JSON lines; "
    "a restarted sandbox reads FILE back first and remembers what it accepted.",
)
@click.option(
    "--latency-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Answer every POST /kcis after this many milliseconds (a real gateway's pace).",
)
@click.option(
    "--jitter-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Give or take up to this many milliseconds, uniformly, on each answer.",
)
@click.option("--allow-remote", is_flag=True, help="Allow a host other than loopback.")
@southbound_options
def sandbox(
    host: str,
    port: int,
    fault_rate: float,
    fault_kinds: str,
    seed: int,
    slow_seconds: float,
    token_ttl: int,
    client_id: str,
    client_secret: str,
    record: Path | None,
    latency_ms: float,
    jitter_ms: float,
    allow_remote: bool,
    **southbound: Any,
) -> None:
    """Run a local stand-in for the Fibre Cafe Supplier Updates API until Ctrl+C."""
    from ..._net import is_loopback
    from .server import SandboxConfig, serve

    def ready(base_url: str) -> None:
        where = f"; recording to {record}" if record else ""
        click.echo(f"sandbox gateway: {base_url}  (client id {client_id}{where}; Ctrl+C to stop)")
        if not is_loopback(host):
            click.echo(f"warning: {host} is reachable from other machines", err=True)

    try:
        config = SandboxConfig(
            host=host,
            port=port,
            client_id=client_id,
            client_secret=client_secret,
            token_ttl=token_ttl,
            fault_rate=fault_rate,
            fault_kinds=[k for k in fault_kinds.split(",") if k.strip()],
            seed=seed,
            slow_seconds=slow_seconds,
            record=record,
            allow_remote=allow_remote,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
        )
        if southbound["supplier_url"]:
            ok = run_southbound(config, echo=click.echo, **southbound)
            raise click.exceptions.Exit(0 if ok else 1)
        with _stopped_by_signals():
            serve(config, ready=ready)
    except EngineError as exc:
        raise click.ClickException(exc.message) from None
