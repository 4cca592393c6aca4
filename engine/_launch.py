"""The ``kci-engine`` console script: the command needs the ``cli`` extra (click), which a
backend that only embeds the engine does not install. Without it, say so in one line."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the ``kci-engine`` command, or explain which extra it needs."""
    try:
        import click  # noqa: F401
    except ImportError:
        sys.exit("Error: the kci-engine command needs the cli extra: pip install 'kci-engine[cli]'")
    from .cli import main as cli_main

    cli_main()
