"""Golden transcripts: the full KCI stream of a scenario, kept next to it and compared on replay.

A scenario's expectations say what its author cared about; the transcript records everything the
engine would tell the tenant (every body, every refusal message), so any change in that shows up
as a diff in review, even one no expectation mentions. KCI ids become ``<kci N>`` and issuedOn
``<issuedOn>``, and the order's key in refusal messages ``<order>``: they depend on the id
generator, the clock and the store, not on the lifecycle. ``kci-engine record`` writes them.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from ...history.normalise import normalise
from ...store.base import Store
from .loader import SUFFIXES, TRANSCRIPT_SUFFIX, discover, load_scenario
from .replay import Result, replay

__all__ = ["compare", "discover", "record", "replay_file", "transcript", "transcript_path"]

COMMENT = (
    "Golden transcript of the scenario of the same name, written by `kci-engine record`: "
    "generated, do not edit. Replay compares the engine's KCIs with it."
)
#: A transcript diff longer than this is cut: the first lines say what changed.
MAX_DIFF_LINES = 80


def transcript_path(scenario_path: Path) -> Path:
    """Where the transcript of ``scenario_path`` lives: ``x.kci.yaml`` -> ``x.transcript.json``."""
    name = scenario_path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return scenario_path.with_name(name.removesuffix(suffix) + TRANSCRIPT_SUFFIX)
    return scenario_path.with_name(scenario_path.stem + TRANSCRIPT_SUFFIX)


def transcript(result: Result) -> dict[str, Any]:
    """The normalised transcript of a replay, JSON-ready."""
    ids: dict[str, str] = {}
    steps: list[dict[str, Any]] = []
    for outcome in result.outcomes:
        entry: dict[str, Any] = {
            "step": outcome.label,
            "event": outcome.event,
            "status": outcome.status,
        }
        if outcome.error is not None:
            message = outcome.error.message
            if result.key:
                message = message.replace(result.key, "<order>")
            entry["refused"] = {"error": type(outcome.error).__name__, "message": message}
        else:
            entry["kcis"] = [normalise(kci.body, ids) for kci in outcome.kcis]
        steps.append(entry)
    return {
        "comment": COMMENT,
        "title": result.scenario.title,
        "order_type": result.scenario.order_type.value,
        "steps": steps,
    }


def dumps(data: dict[str, Any]) -> str:
    """A transcript as written to disk: indented and key-sorted, so diffs are line by line."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def record(result: Result, path: Path) -> Path:
    """Write the transcript of ``result``, the replay of the scenario at ``path``.

    Returns:
        The transcript's path.
    """
    target = transcript_path(path)
    target.write_text(dumps(transcript(result)), encoding="utf-8")
    return target


def compare(result: Result, path: Path) -> list[str]:
    """The replay against the golden transcript of ``path``, as report lines (a unified diff);
    empty if they agree or there is no transcript."""
    target = transcript_path(path)
    if not target.exists():
        return []
    try:
        golden = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"  golden transcript {target} cannot be read: {exc}"]
    actual = json.loads(dumps(transcript(result)))
    if golden == actual:
        return []
    diff = list(
        difflib.unified_diff(
            dumps(golden).splitlines(),
            dumps(actual).splitlines(),
            fromfile=str(target),
            tofile="replay",
            lineterm="",
            n=2,
        )
    )
    if len(diff) > MAX_DIFF_LINES:
        diff = [*diff[:MAX_DIFF_LINES], f"... {len(diff) - MAX_DIFF_LINES} more diff lines"]
    head = f"  the KCIs differ from the golden transcript {target.name} (re-record if intended):"
    return [head, *(f"    {line}" for line in diff)]


def replay_file(
    path: Path | str,
    *,
    store: Store | None = None,
    order_prefix: str = "",
    transcripts: bool = True,
) -> Result:
    """Load the scenario at ``path``, replay it, and hold it against its golden transcript.

    Raises:
        ScenarioError: the file is malformed.
    """
    loaded = load_scenario(path)
    result = replay(
        loaded.scenario,
        name=loaded.name,
        store=store,
        order_prefix=order_prefix,
        step_lines=loaded.step_lines,
    )
    if transcripts and result.passed:
        result.failures.extend(compare(result, loaded.path))
    return result
