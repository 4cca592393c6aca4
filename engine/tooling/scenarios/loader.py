"""Reading scenario files: YAML with line numbers, so every mistake points at its line.

PyYAML's constructed data forgets where each value stood, so the loader composes the node tree
first, indexes the line of every key and list item by its path, and then validates the
constructed data against :class:`~engine.scenarios.model.Scenario`. A pydantic error's location
is looked up in that index, which yields ``FILE:LINE: steps[3].data.problem_code: <message>``.

YAML timestamps are read as plain strings (the timestamp resolver is removed): the engine parses
wire date-times itself, and an unquoted ``2026-12-01T08:00:00Z`` in an order must reach it
exactly as written, not as a Python ``datetime`` that would be re-serialised differently. Only
``true`` and ``false`` are booleans (as in YAML 1.2): a KCI ``text: No`` stays the word "No".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ...errors import Problem, ScenarioError
from . import SUFFIXES, TRANSCRIPT_SUFFIX
from .model import FIELD_PROBLEM, Scenario

__all__ = ["SUFFIXES", "TRANSCRIPT_SUFFIX", "Problem", "ScenarioError", "load_scenario"]

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ScenarioFile:
    """A loaded scenario and where its steps stand in the file (for failure reports)."""

    path: Path
    scenario: Scenario
    step_lines: tuple[int, ...]

    @property
    def name(self) -> str:
        return str(self.path)


class _Loader(yaml.SafeLoader):
    """A SafeLoader that leaves timestamps as strings and reads only true/false as booleans."""


_PLAIN = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _PLAIN]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_scenario(path: Path | str) -> ScenarioFile:
    """Load and validate one scenario file.

    Raises:
        ScenarioError: the file cannot be read, is not YAML, or breaks the format; it names the
            file, the line and the field of each problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), [Problem(0, "", f"cannot read it: {exc}")]) from None
    scenario, lines = parse_scenario(text, str(path))
    steps = tuple(lines.get(("steps", i), 0) for i in range(len(scenario.steps)))
    return ScenarioFile(path, scenario, steps)


def parse_scenario(text: str, name: str = "<scenario>") -> tuple[Scenario, dict[Loc, int]]:
    """Validate scenario YAML ``text``; also return the line of every key and list item.

    Raises:
        ScenarioError: as :func:`load_scenario`.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {(): 1}
        problems: list[Problem] = []
        if node is not None:
            _index(node, (), lines, problems)
        if problems:
            raise ScenarioError(name, problems)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ScenarioError(name, [Problem(line, "", f"not valid YAML: {message}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ScenarioError(
            name, [Problem(1, "", "a scenario is a mapping: title, order_type, order, steps")]
        )
    try:
        return Scenario.model_validate(data), lines
    except ValidationError as exc:
        raise ScenarioError(name, [_problem(err, lines) for err in exc.errors()]) from None


def _index(node: yaml.Node, path: Loc, lines: dict[Loc, int], problems: list[Problem]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            here = (*path, key)
            if key in seen:
                problems.append(
                    Problem(key_node.start_mark.line + 1, render(here), "duplicate key")
                )
            seen.add(key)
            lines[here] = key_node.start_mark.line + 1
            _index(value_node, here, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            here = (*path, position)
            lines[here] = item.start_mark.line + 1
            _index(item, here, lines, problems)


def _problem(err: Any, lines: dict[Loc, int]) -> Problem:
    loc: Loc = tuple(err["loc"])
    message = err["msg"]
    if err["type"] == FIELD_PROBLEM:
        loc = (*loc, *err["ctx"]["path"])
        message = err["ctx"]["message"]
    line = 1
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            line = lines[loc[:end]]
            break
    return Problem(line, render(loc), message)


def render(loc: Iterable[str | int]) -> str:
    """A location as authors read it: ``steps[3].data.problem_code``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def discover(paths: Iterable[Path | str]) -> tuple[list[Path], list[Path]]:
    """The scenario files named by ``paths`` (directories are searched for ``*.kci.yaml``), and
    the golden transcripts among them, which are compared with their scenarios, not replayed.

    Raises:
        ScenarioError: a path is neither a scenario, a transcript nor a directory.
    """
    found: list[Path] = []
    transcripts: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found.extend(sorted(p for p in given.rglob("*") if p.name.endswith(SUFFIXES)))
        elif given.name.endswith(SUFFIXES):
            found.append(given)
        elif given.name.endswith(TRANSCRIPT_SUFFIX):
            transcripts.append(given)
        else:
            raise ScenarioError(
                str(given), [Problem(0, "", f"not a scenario file (*{', *'.join(SUFFIXES)})")]
            )
    unique = list(dict.fromkeys(found))
    return unique, transcripts
