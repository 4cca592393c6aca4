"""What every ``kci-engine`` command shares: the database option, opening a store, one-line
errors, and output that cannot smuggle control characters onto an operator's terminal."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..store.sql import SqlStore

F = TypeVar("F", bound=Callable[..., Any])
DB_ENV = "KCI_ENGINE_DB"
DB_HELP = "Database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB."

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def safe(text: object) -> str:
    """``text`` for a terminal: control characters (an ANSI escape, a NUL, a lone surrogate)
    shown as escapes, so an order id or a gateway's message cannot move the cursor or recolour
    the screen; newlines and tabs are kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", str(text))  # fmt: skip


def echo(text: object = "", *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` through :func:`safe`."""
    click.echo(safe(text), err=err, nl=nl)


def db_option(*, required: bool = True) -> Callable[[F], F]:
    """``--db URL``, read from ``KCI_ENGINE_DB`` when not given. Not marked ``[required]`` in
    the help, since the environment may give it; a command that needs it and has neither says
    so in one line."""

    def decorate(command: F) -> F:
        return click.option(
            "--db",
            "db_url",
            envvar=DB_ENV,
            show_envvar=True,
            callback=_required_db if required else None,
            help=DB_HELP,
        )(command)

    return decorate


def _required_db(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    if not value:
        raise click.ClickException(f"give the database with --db URL or the {DB_ENV} variable")
    return value


@contextmanager
def open_store(url: str, *, read_only: bool = False) -> Iterator[SqlStore]:
    """The store at ``url`` for a command: never an in-memory database (no other process would
    see it), read-only for commands that only read (they neither migrate nor take a write
    lock), closed afterwards."""
    from ..store.sql import SqlStore  # imported here: SQLAlchemy is slow to load

    with SqlStore(url, read_only=read_only, persistent=True) as store:
        yield store
