"""Run a draw of ids in a forked child, for the tests that ids never repeat across a fork."""

from __future__ import annotations

import os
from collections.abc import Callable


def drawn_in_child(draw: Callable[[], str], count: int) -> list[str]:
    """``count`` values of ``draw()`` made in a child forked from this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits
        os.write(write, "\n".join(draw() for _ in range(count)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        values = pipe.read().split("\n")
    os.waitpid(pid, 0)
    return values
