"""The ``kci-engine`` command: one module per group of subcommands, registered here.

Every command fails the same way: one line, ``Error: ...``, and exit status 1, whatever went
wrong (a refused input, an unreadable database, a full disk, a bug); ``--debug`` shows the
traceback instead. The library configures no logging; the command logs the engine's own
records (the ``kci_engine`` loggers) to stderr at ``--log-level``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from ..errors import EngineError
from ._common import safe

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = ("debug", "info", "warning", "error")


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (not at creation)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str) -> None:
    """Log the engine's own records (the ``kci_engine`` loggers) to stderr at ``level``. Only
    the command does this; the root logger is left alone, so Alembic's and httpx's INFO lines
    stay out of the output."""
    logger = logging.getLogger("kci_engine")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


class _OneLineErrors(click.Group):
    """A group whose subcommands fail with one line, ``Error: ...``, unless ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.meta.get("kci_debug"):
                raise
            if isinstance(exc, EngineError):
                raise click.ClickException(safe(exc.message)) from None
            raise click.ClickException(safe(f"{type(exc).__name__}: {exc}")) from None


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kci-engine")
@click.option(
    "--log-level",
    type=click.Choice(_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="KCI_LOG_LEVEL",
    show_envvar=True,
    help="How much the engine logs to stderr.",
)
@click.option(
    "-v", "--debug", is_flag=True, help="Show the traceback of a failure, and log at debug level."
)
@click.pass_context
def main(ctx: click.Context, log_level: str, debug: bool) -> None:
    """kci-engine: order lifecycles that keep the customer informed (Fibre Cafe KCIs).

    Shell completion (bash): eval "$(_KCI_ENGINE_COMPLETE=bash_source kci-engine)"; zsh and
    fish likewise, with zsh_source or fish_source.
    """
    ctx.meta["kci_debug"] = debug
    configure_logging("debug" if debug else log_level)


def _register() -> None:
    from ..tooling.sandbox.command import sandbox
    from ..tooling.scenarios.command import record_command, replay_command
    from . import db, demo, dispatch, orders, outbox, review
    from .history import history
    from .jeopardy import jeopardy_command
    from .reconcile import reconcile_command
    from .serve import serve as serve_command

    for command in (
        sandbox,
        replay_command,
        record_command,
        db.db,
        demo.demo,
        dispatch.dispatch,
        orders.timeline,
        outbox.outbox,
        review.chart,
        review.schema,
        history,
        jeopardy_command,
        reconcile_command,
        serve_command,
    ):
        main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
