"""A pytest plugin: every ``*.kci.yaml`` file in a test run is a test.

Installed with kci-engine (entry point ``kci_engine`` in the ``pytest11`` group), so a supplier
drops scenario files into their own test directories and ``pytest`` replays them, each against
its golden transcript if one lies next to it. A failure shows the readable diff of expected
against actual KCIs, not a traceback through the replay machinery. Disable it with
``-p no:kci_engine``. Loading it needs only pytest: PyYAML (the ``scenarios`` extra) is imported
when a scenario file runs, so an engine installed without it leaves pytest working.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..errors import Problem, ScenarioError, ScenarioFailed
from .scenarios import SUFFIXES


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """Collect scenario files (``*.kci.yaml``, ``*.kci.yml``)."""
    if file_path.name.endswith(SUFFIXES):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """A scenario file: one test, named after the file."""

    def collect(self) -> Iterator[ScenarioItem]:
        name = self.path.name
        for suffix in SUFFIXES:
            name = name.removesuffix(suffix)
        yield ScenarioItem.from_parent(self, name=name)


class ScenarioItem(pytest.Item):
    """Replays its file on a fresh in-memory engine when run."""

    def runtest(self) -> None:
        try:  # scenario files need PyYAML, which the engine alone does not install
            from .scenarios.transcript import replay_file
        except ImportError as missing:
            why = f"needs the scenarios extra: pip install 'kci-engine[scenarios]' ({missing})"
            raise ScenarioError(str(self.path), [Problem(0, "", why)]) from None
        result = replay_file(self.path)  # a ScenarioError reports the file, line and field
        if not result.passed:
            raise ScenarioFailed(result.report())

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str:
        if isinstance(excinfo.value, ScenarioFailed | ScenarioError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.path.name}"
