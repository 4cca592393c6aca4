"""``python -m kci_engine.cli``: the ``kci-engine`` command."""

from . import main

main()
