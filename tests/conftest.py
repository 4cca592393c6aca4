"""Shared fixtures: an engine with a stepping clock and readable ids, and sample orders."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.testing import test_engine


@pytest.fixture
def engine() -> Engine:
    """An in-memory engine with a deterministic clock and KCI ids."""
    return test_engine()
