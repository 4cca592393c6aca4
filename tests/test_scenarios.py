"""Scenario files: the loader's errors, replay and its diffs, the commands, golden transcripts, the
pytest plugin, the library's coverage, and the generated lifecycles (with a broken guard)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from kci_engine.core.codes import OrderType, ReasonCode
from kci_engine.orders import SPECS, parse_kci
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.scenarios.command import record_command, replay_command
from kci_engine.tooling.scenarios.coverage import Coverage, edge_name
from kci_engine.tooling.scenarios.generate import GenerationError, covering_scenarios
from kci_engine.tooling.scenarios.loader import (
    ScenarioError,
    discover,
    load_scenario,
    parse_scenario,
)
from kci_engine.tooling.scenarios.model import Scenario
from kci_engine.tooling.scenarios.refusals import generated_scenarios, refusal_scenarios
from kci_engine.tooling.scenarios.replay import Result, replay
from kci_engine.tooling.scenarios.transcript import replay_file, transcript, transcript_path

pytest_plugins = ["pytester"]

LIBRARY = Path(__file__).parent / "scenarios"
FILES = sorted(LIBRARY.glob("*.kci.yaml"))
CLI = click.Group("kci-engine", commands=[replay_command, record_command])

#: A small valid scenario the tests below break in one place at a time.
BASE = """\
title: Cease - acknowledged, committed, completed
order_type: cease
order:
  id: 3001
  tenant: TENANT1
  serviceId: SVC-1
steps:
  - event: acknowledge
    data:
      order: {supplierOrderReference: SUP-1}
    expect:
      - {reason: ACKNOWLEDGED, status: ACKNOWLEDGED, sequence: 1}
  - event: commit
    data:
      order: {committedDate: 2026-12-12T08:00:00Z, targetDate: 2026-12-12T08:00:00Z}
    expect:
      - {reason: COMMITTED, status: IN_PROGRESS, sequence: 2}
  - event: complete
    expect:
      - {reason: COMPLETED, status: COMPLETED, sequence: 3}
"""


def run(text: str) -> Result:
    scenario, lines = parse_scenario(text, "t.kci.yaml")
    steps = [lines.get(("steps", i), 0) for i in range(len(scenario.steps))]
    return replay(scenario, name="t.kci.yaml", step_lines=steps)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- The loader: every mistake names the file, the line and the field ---------------------------

UNSOLICITED = """\
title: U
order_type: unsolicited_cease
order: {supplierOrderReference: UC-1, status: ACKNOWLEDGED, serviceId: S, reason: CHANGE_OF_CP,
        requestedCeaseDate: 2026-12-20T00:00:00Z}
"""
MALFORMED = [
    ("title: [unclosed\n", 2, "", "not valid YAML"),
    ("- just\n- a list\n", 1, "", "a scenario is a mapping"),
    ("", 1, "", "a scenario is a mapping"),
    (BASE.replace("title: Cease - acknowledged, committed, completed\n", ""), 1, "title",
     "Field required"),
    (BASE.replace("order_type: cease", "order_type: broadband"), 2, "order_type", "Input should"),
    (BASE + "colour: red\n", 21, "colour", "Extra inputs are not permitted"),
    (BASE + "title: again\n", 21, "title", "duplicate key"),
    (BASE.replace("event: commit", "event: comit"), 13, "steps[1].event", "Input should be"),
    (BASE.replace("order: {committedDate", "problem_code: WRONG\n      order: {committedDate"), 15,
     "steps[1].data.problem_code", "Input should be 'ACCESS_ISSUE'"),
    (BASE.replace("order: {supplierOrderReference: SUP-1}", "problemCode: X"), 10,
     "steps[0].data.problemCode", "Input should be"),
    (BASE.replace("order: {supplierOrderReference: SUP-1}", "colour: red"), 10,
     "steps[0].data.colour", "Extra inputs"),
    (BASE.replace("    expect:\n      - {reason: COMPLETED, status: COMPLETED, sequence: 3}\n", ""),
     18, "steps[2]", "say what the step produces"),
    (BASE + "    refused: {error: MissingField, field: serviceId}\n", 21, "steps[2].refused",
     "not both"),
    (BASE.replace("reason: COMMITTED,", "reasn: COMMITTED,"), 17, "steps[1].expect[0].reason",
     "Field required"),
    (BASE.replace("reason: COMMITTED, ", ""), 17, "steps[1].expect[0].reason", "Field required"),
    (BASE.replace("sequence: 2", "sequence: 0"), 17, "steps[1].expect[0].sequence",
     "greater than or equal to 1"),
    (BASE.replace("{reason: COMMITTED, status: IN_PROGRESS, sequence: 2}",
                  "{reason: COMMITTED, status: DONE}"), 17, "steps[1].expect[0].status",
     "Input should be"),
    (BASE + "    order_status: FINISHED\n", 21, "steps[2].order_status", "Input should be"),
    (BASE.replace("  - event: complete\n", "  - event: complete\n    refused: {error: Oops}\n")
     .replace("    expect:\n      - {reason: COMPLETED", "    x:\n      - {reason: COMPLETED"), 19,
     "steps[2].refused.error", "Input should be 'EventNotAllowed'"),
    (BASE.replace("    expect:\n      - {reason: COMPLETED, status: COMPLETED, sequence: 3}\n",
                  "    refused: {error: ContractViolation, field: serviceId}\n"), 19,
     "steps[2].refused.field", "only a MissingField names a field"),
    (BASE.replace("    expect:\n      - {reason: COMPLETED, status: COMPLETED, sequence: 3}\n",
                  "    refused: {error: EventNotAllowed, rule: x}\n"), 19,
     "steps[2].refused.rule", "only a ContractViolation or MissingField states a rule"),
    (BASE.replace("    expect:\n      - {reason: COMPLETED, status: COMPLETED, sequence: 3}\n",
                  "    refused: {error: MissingField, allowed: []}\n"), 19,
     "steps[2].refused.allowed", "only an EventNotAllowed lists allowed events"),
    (BASE.replace("  - event: commit\n", "  - event: commit\n    at: 2026-12-01T08:00:00\n"), 14,
     "steps[1].at", "timezone"),
    (BASE.replace("  - event: acknowledge\n", "  - event: acknowledge\n    at: 2027-01-01T00:00Z\n")
     .replace("  - event: commit\n", "  - event: commit\n    at: 2026-12-31T00:00:00Z\n"), 15,
     "steps[1].at", "is earlier than the step before"),
    (BASE.replace("steps:", "start: {answered_with: HELD}\nsteps:"), 7, "start.answered_with",
     "Input should be 'ACKNOWLEDGED' or 'IN_PROGRESS'"),
    (BASE.replace("steps:", "start: {refused: {error: InvalidOrder}}\nsteps:"), 8, "steps",
     "the start is refused, so no step can follow"),
    (UNSOLICITED, 1, "start", "say what creating the unsolicited cease sends"),
    (UNSOLICITED + "start: {answered_with: ACKNOWLEDGED, expect: []}\n", 5,
     "start.answered_with", "an unsolicited cease has no synchronous 201 answer"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "field", "says"), MALFORMED)
def test_a_malformed_file_is_refused_naming_the_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, says: str
) -> None:
    path = write(tmp_path, "broken.kci.yaml", text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.line, info.value.field) == (line, field), str(info.value)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{path}:{line}: {field + ': ' if field else ''}"), first
    assert says in first


def test_every_problem_of_a_file_is_reported_each_on_its_line(tmp_path: Path) -> None:
    text = BASE.replace("sequence: 1}", "sequence: 1, x: 1}").replace("event: commit", "event: c")
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, "two.kci.yaml", text))
    assert [(p.line, p.field) for p in info.value.problems] == [
        (12, "steps[0].expect[0].x"),
        (13, "steps[1].event"),
    ]


def test_an_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing\.kci\.yaml:0: cannot read it"):
        load_scenario(tmp_path / "missing.kci.yaml")


def test_yaml_timestamps_stay_strings_and_only_true_false_are_booleans() -> None:
    scenario, _ = parse_scenario(
        BASE.replace(
            "data:\n      order: {supplierOrderReference: SUP-1}",
            "data: {text: No, resolves_request: false}",
        )
        .replace("reason: ACKNOWLEDGED", "reason: WARNING")
        .replace("event: acknowledge", "event: warn"),
    )
    assert scenario.steps[0].data.text == "No"
    assert scenario.steps[0].data.resolves_request is False
    assert scenario.steps[1].data.order == {
        "committedDate": "2026-12-12T08:00:00Z",
        "targetDate": "2026-12-12T08:00:00Z",
    }


def test_discover_finds_scenarios_in_directories_and_sets_transcripts_aside(tmp_path: Path) -> None:
    write(tmp_path, "a.kci.yaml", BASE)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "b.kci.yml", BASE)
    transcript_file = write(tmp_path, "a.transcript.json", "{}")
    files, transcripts = discover([tmp_path, tmp_path / "a.kci.yaml", transcript_file])
    assert files == [tmp_path / "a.kci.yaml", tmp_path / "sub" / "b.kci.yml"]
    assert transcripts == [transcript_file]
    with pytest.raises(ScenarioError, match="not a scenario file"):
        discover([write(tmp_path, "notes.yaml", "x: 1")])


# --- Replay: expected against actual, as a diff --------------------------------------------------


def test_a_scenario_that_matches_passes_and_reports_its_edges() -> None:
    result = run(BASE)
    assert result.passed, result.report()
    assert [k.reason_code for k in result.kcis] == ["ACKNOWLEDGED", "COMMITTED", "COMPLETED"]
    names = sorted(edge_name(OrderType.CEASE, e) for e in result.edges)
    assert names == [
        "cease:acknowledge:SENT_TO_SUPPLIER->ACKNOWLEDGED",
        "cease:commit:ACKNOWLEDGED->IN_PROGRESS",
        "cease:complete:IN_PROGRESS->COMPLETED",
    ]


COMPLETE_KCI = "      - {reason: COMPLETED, status: COMPLETED, sequence: 3}\n"
MISMATCHES = [
    ("sequence: 2}", "sequence: 3}", ["- #3 COMMITTED status=IN_PROGRESS",
                                      "+ #2 COMMITTED status=IN_PROGRESS"]),
    ("status: IN_PROGRESS,", "status: HELD,", ["- #2 COMMITTED status=HELD"]),
    ("sequence: 1}", "sequence: 1, problem_code: NETWORK_ISSUE}",
     ["- #1 ACKNOWLEDGED status=ACKNOWLEDGED problem_code=NETWORK_ISSUE",
      "+ #1 ACKNOWLEDGED status=ACKNOWLEDGED problem_code=null"]),
    ("sequence: 1}", "sequence: 1, order: {supplierOrderReference: SUP-2}}",
     ["+ #1 ACKNOWLEDGED status=ACKNOWLEDGED order.supplierOrderReference=SUP-1"]),
    ("sequence: 1}", "sequence: 1, order: {supplierOrderReference: null}}",
     ["- #1 ACKNOWLEDGED status=ACKNOWLEDGED order.supplierOrderReference=null"]),
    ("sequence: 2}", "sequence: 2, order: {committedDate: 2026-12-12T09:00:00Z}}",
     ["+ #2 COMMITTED status=IN_PROGRESS order.committedDate=2026-12-12T08:00:00.000Z"]),
    ("sequence: 1}", "sequence: 1, issued_on: 2026-11-23T09:00:00Z}",
     ["+ #1 ACKNOWLEDGED status=ACKNOWLEDGED issued_on=2026-11-23T09:01:00.000Z"]),
    ("sequence: 1}", "sequence: 1, characteristics: {SERVICE_ID: S}}",
     ["+ #1 ACKNOWLEDGED status=ACKNOWLEDGED characteristics.SERVICE_ID=null"]),
    (COMPLETE_KCI, "    refused: {error: MissingField, field: serviceId}\n",
     ["- refused MissingField field=serviceId", "+ #3 COMPLETED status=COMPLETED"]),
    (COMPLETE_KCI, COMPLETE_KCI + "      - {reason: UPDATE}\n",
     ["  #3 COMPLETED status=COMPLETED", "- #? UPDATE", "+ (no KCI)"]),
    ("    expect:\n" + COMPLETE_KCI, "    expect: []\n",
     ["- (no KCI)", "+ #3 COMPLETED status=COMPLETED"]),
    ("data:\n      order: {committedDate",
     "data:\n      problem_code: NETWORK_ISSUE\n      order: {committedDate", []),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "diff"), MISMATCHES)
def test_each_difference_fails_the_scenario_with_a_readable_diff(
    old: str, new: str, diff: list[str]
) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE
    if not diff:  # the change is one the engine refuses: the diff shows the refusal
        result = run(text)
        assert not result.passed
        assert "+ refused" in result.report()
        return
    result = run(text)
    assert not result.passed
    report = result.report()
    assert report.startswith("t.kci.yaml: Cease - acknowledged, committed, completed\n")
    for line in diff:
        assert f"    {line}" in report.splitlines(), report


REFUSALS = [
    ("{error: MissingField, field: text}", "- refused MissingField field=text"),
    ("{error: ContractViolation, rule: nothing on the order}",
     "- refused ContractViolation rule=\"nothing on the order\""),
    ("{error: MissingField, field: problemCode, rule: no such rule}",
     "+ refused MissingField field=problemCode: order T:1"),
    ("{error: MissingField, field: problemCode, message: no such text}",
     "- refused MissingField field=problemCode message=\"no such text\""),
    ("{error: EventNotAllowed}", "- refused EventNotAllowed"),
]  # fmt: skip


@pytest.mark.parametrize(("refused", "diff"), REFUSALS)
def test_a_refusal_other_than_the_expected_one_fails(refused: str, diff: str) -> None:
    text = f"""\
title: Provide warn without problemCode
order_type: provide
order: {{id: 1, tenant: T, supplierOrderReference: S-1}}
start: {{answered_with: ACKNOWLEDGED}}
steps:
  - event: warn
    data: {{text: Heads up}}
    refused: {refused}
"""
    result = run(text)
    assert not result.passed
    assert f"    {diff}" in result.report(), result.report()


def test_the_expected_refusal_passes_and_the_allowed_list_is_compared_exactly() -> None:
    text = """\
title: Provide, final
order_type: provide
order: {id: 1, tenant: T}
steps:
  - event: reject
    data: {problem_code: INVALID_REQUEST, text: No}
    expect: [{reason: ORDER_REJECTED, status: REJECTED, sequence: 1}]
  - event: warn
    data: {problem_code: NETWORK_ISSUE}
    refused: {error: EventNotAllowed, allowed: []}
    order_status: REJECTED
"""
    assert run(text).passed
    result = run(text.replace("allowed: []", "allowed: [warn]"))
    assert "    + refused EventNotAllowed allowed=[]: order T:1: event 'warn' is not allowed" in (
        result.report()
    )


def test_replay_stops_at_the_first_step_that_differs() -> None:
    result = run(BASE.replace("sequence: 1}", "sequence: 9}"))
    assert [o.label for o in result.outcomes] == ["start", "steps[0]"]
    assert result.failures[0] == "  steps[0] acknowledge (line 8):"


def test_a_start_refused_other_than_expected_fails() -> None:
    text = UNSOLICITED.replace("serviceId: S, ", "") + "start: {refused: {error: MissingField}}\n"
    result = run(text)
    assert not result.passed
    assert "+ refused InvalidOrder: invalid unsolicited_cease order: serviceId" in result.report()
    assert run(text.replace("MissingField", "InvalidOrder")).passed


def test_an_unsolicited_cease_start_is_compared_with_its_created_kci() -> None:
    text = UNSOLICITED + "start: {expect: [{reason: CREATED, status: IN_PROGRESS}]}\n"
    result = run(text)
    assert "    - #? CREATED status=IN_PROGRESS" in result.report()
    assert run(text.replace("IN_PROGRESS", "ACKNOWLEDGED")).passed


def test_a_stream_with_a_gap_or_time_going_back_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kci_engine.tooling.scenarios import replay as module

    result = run(BASE)
    kcis = result.kcis
    gap = [kcis[0], kcis[2]]
    assert module.stream_problems(gap) == [
        "  the KCI stream is not numbered 1..n without gaps: [1, 3]"
    ]
    back = [
        kcis[0]._replace(issued_on=kcis[1].issued_on),
        kcis[1]._replace(issued_on=kcis[0].issued_on),
    ]
    assert "  issuedOn goes backwards along the KCI stream" in module.stream_problems(back)
    broken = kcis[0]._replace(body={**kcis[0].body, "problemCode": "NETWORK_ISSUE"})
    [problem] = module.stream_problems([broken])
    assert problem.startswith("  KCI #1 breaks the contract:")


# --- The library ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_library_scenario_passes_against_its_golden_transcript(path: Path) -> None:
    assert transcript_path(path).exists(), f"record it: kci-engine record {path}"
    result = replay_file(path)
    assert result.passed, result.report()


def library() -> list[Result]:
    return [replay_file(path) for path in FILES]


def test_the_library_has_forty_lifecycles_and_takes_every_transition_of_every_machine() -> None:
    assert len(FILES) >= 40
    coverage = Coverage()
    for result in library():
        coverage.add(result.scenario.order_type, result.edges)
    assert coverage.figures() == {t: (len(m.edges), len(m.edges)) for t, m in SPECS.items()}
    assert coverage.complete()
    assert set(OrderType) == {load_scenario(p).scenario.order_type for p in FILES}


def test_the_library_sends_every_reason_code() -> None:
    sent = {kci.reason_code for result in library() for kci in result.kcis}
    assert sent == set(ReasonCode)


def _kind(refusal: dict[str, Any]) -> tuple[str, str]:
    return refusal["error"], refusal.get("field") or refusal.get("rule") or refusal.get(
        "message", ""
    )


def test_the_library_meets_every_kind_of_refusal_the_generator_knows() -> None:
    """Each way the generator breaks a guard (a missing field, a contract rule, a status that
    refuses the event) is met at least once by a hand-written scenario."""
    wanted = set()
    for _, scenario in refusal_scenarios():
        refused = scenario.start.refused or next(s.refused for s in scenario.steps if s.refused)
        assert refused is not None
        wanted.add(_kind(refused.model_dump(exclude_none=True)))
    met = {
        (type(o.error).__name__, getattr(o.error, "field", None) or o.error.message)
        for result in library()
        for o in result.outcomes
        if o.error is not None
    }
    missing = {
        (error, what)
        for error, what in wanted
        if not any(e == error and (what == m or what in m) for e, m in met)
    }
    assert missing == set()


# --- Golden transcripts --------------------------------------------------------------------------


def test_a_transcript_normalises_ids_timestamps_and_the_order_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.kci.yaml",
        BASE.replace(
            "sequence: 3}", "sequence: 3}\n  - event: warn\n    refused: {error: EventNotAllowed}"
        ),
    )
    data = transcript(replay_file(path))
    steps = data["steps"]
    assert [s["step"] for s in steps] == ["start", "steps[0]", "steps[1]", "steps[2]", "steps[3]"]
    assert [k["id"] for s in steps for k in s.get("kcis", [])] == ["<kci 1>", "<kci 2>", "<kci 3>"]
    assert {k["issuedOn"] for s in steps for k in s.get("kcis", [])} == {"<issuedOn>"}
    assert steps[-1]["refused"]["message"].startswith("order <order>: event 'warn' is not allowed")
    assert steps[-1]["status"] == "COMPLETED"


def test_record_writes_the_transcript_and_replay_then_fails_on_any_change(tmp_path: Path) -> None:
    path = write(tmp_path, "t.kci.yaml", BASE)
    runner = CliRunner()
    first = runner.invoke(CLI, ["record", str(path)])
    assert first.exit_code == 0, first.output
    assert f"new       {tmp_path / 't.transcript.json'} (3 KCIs)" in first.output
    assert "unchanged" in runner.invoke(CLI, ["record", str(path)]).output
    assert runner.invoke(CLI, ["replay", str(tmp_path)]).exit_code == 0
    # A change no expectation mentions: the transcript catches it.
    write(tmp_path, "t.kci.yaml", BASE.replace("serviceId: SVC-1", "serviceId: SVC-2"))
    changed = runner.invoke(CLI, ["replay", str(path)])
    assert changed.exit_code == 1
    assert "the KCIs differ from the golden transcript t.transcript.json" in changed.output
    assert re.search(r'^    - +"serviceId": "SVC-1",$', changed.output, re.MULTILINE)
    assert re.search(r'^    \+ +"serviceId": "SVC-2",$', changed.output, re.MULTILINE)
    assert runner.invoke(CLI, ["replay", "--no-transcripts", str(path)]).exit_code == 0
    assert "updated" in runner.invoke(CLI, ["record", str(path)]).output
    assert runner.invoke(CLI, ["replay", str(path)]).exit_code == 0


def test_record_refuses_a_failing_scenario_unless_forced(tmp_path: Path) -> None:
    path = write(tmp_path, "t.kci.yaml", BASE.replace("sequence: 3}", "sequence: 4}"))
    refused = CliRunner().invoke(CLI, ["record", str(path)])
    assert refused.exit_code == 1
    assert "not recorded (use --force to record anyway)" in refused.output
    assert not transcript_path(path).exists()
    forced = CliRunner().invoke(CLI, ["record", "--force", str(path)])
    assert forced.exit_code == 0
    assert transcript_path(path).exists()


def test_an_unreadable_transcript_fails_the_replay(tmp_path: Path) -> None:
    path = write(tmp_path, "t.kci.yaml", BASE)
    write(tmp_path, "t.transcript.json", "{not json")
    result = replay_file(path)
    assert not result.passed
    assert "golden transcript" in result.report()
    assert "cannot be read" in result.report()


# --- The replay command --------------------------------------------------------------------------


def test_replay_passes_the_library_with_full_coverage_and_skips_transcript_paths() -> None:
    paths = sorted(str(p) for p in LIBRARY.iterdir())
    out = CliRunner().invoke(CLI, ["replay", *paths])
    assert out.exit_code == 0, out.output
    assert f"PASS {FILES[0]}" in out.output
    assert f"{len(FILES)} scenarios: {len(FILES)} passed, 0 failed ({len(FILES)} transcript" in (
        out.output
    )
    for order_type, machine in SPECS.items():
        total = len(machine.edges)
        assert f"  {order_type.value:<18} {total:>3}/{total:<3} 100.0 %" in out.output


def test_replay_exits_1_naming_failures_malformed_files_and_other_paths(tmp_path: Path) -> None:
    good = write(tmp_path, "good.kci.yaml", BASE)
    bad = write(tmp_path, "bad.kci.yaml", BASE.replace("sequence: 2}", "sequence: 5}"))
    broken = write(tmp_path, "broken.kci.yaml", BASE.replace("event: commit", "event: x"))
    other = write(tmp_path, "notes.txt", "")
    out = CliRunner().invoke(CLI, ["replay", str(good), str(bad), str(broken), str(other)])
    assert out.exit_code == 1
    assert f"PASS {good}" in out.output
    assert f"FAIL {bad}: Cease - acknowledged, committed, completed" in out.output
    assert "    - #5 COMMITTED status=IN_PROGRESS" in out.output
    assert f"ERROR {broken}:13: steps[1].event: Input should be" in out.output
    assert f"ERROR {other}:0: not a scenario file" in out.output
    assert "3 scenarios: 1 passed, 3 failed" in out.output
    quiet = CliRunner().invoke(CLI, ["replay", "-q", str(good), str(bad)])
    assert "PASS" not in quiet.output
    assert "FAIL" in quiet.output


def test_replay_needs_a_path_or_generated() -> None:
    out = CliRunner().invoke(CLI, ["replay"])
    assert out.exit_code == 2
    assert "give scenario files or directories, or --generated" in out.output


def test_replay_jsonl_writes_every_kci_body_produced(tmp_path: Path) -> None:
    out_file = tmp_path / "kcis.jsonl"
    out = CliRunner().invoke(
        CLI, ["replay", str(FILES[0]), str(FILES[1]), "--jsonl", str(out_file)]
    )
    assert out.exit_code == 0, out.output
    bodies = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    expected = [kci.body for path in FILES[:2] for kci in replay_file(path).kcis]
    assert [b["reasonCode"] for b in bodies] == [b["reasonCode"] for b in expected]
    assert len(bodies) > 5
    for body in bodies:
        parse_kci(body)
    assert f"{len(bodies)} KCI bodies written to {out_file}" in out.output


def test_replay_shows_a_progress_bar_on_request(tmp_path: Path) -> None:
    with_bar = CliRunner().invoke(CLI, ["replay", "--progress", str(FILES[0])])
    assert "replaying" in with_bar.stderr
    assert f"PASS {FILES[0]}" in with_bar.stdout
    without = CliRunner().invoke(CLI, ["replay", str(FILES[0])])  # stdout is not a terminal
    assert "replaying" not in without.output


def test_replay_lists_missing_transitions_on_request() -> None:
    out = CliRunner().invoke(CLI, ["replay", "--show-missing", str(FILES[0])])
    assert "      not exercised: unsolicited_cease:create:NEW->ACKNOWLEDGED" in out.output


def test_replay_runs_the_generated_lifecycles_with_full_coverage() -> None:
    out = CliRunner().invoke(CLI, ["replay", "--generated", "-q"])
    assert out.exit_code == 0, out.output
    count = len(generated_scenarios())
    assert f"{count} scenarios: {count} passed, 0 failed" in out.output
    assert out.output.count("100.0 %") == 4


# --- Replay on a real database -------------------------------------------------------------------


def test_replay_command_on_sqlite_twice_on_the_same_database(sqlite_url: str) -> None:
    for _ in range(2):
        out = CliRunner().invoke(CLI, ["replay", "-q", "--db", sqlite_url, str(LIBRARY)])
        assert out.exit_code == 0, out.output


SQL_SAMPLE = [p for p in FILES if "cancellation-requests-rejected" in p.name or "201" in p.name][:5]


def test_replay_on_each_backend_matches_the_golden_transcripts(db_url: str) -> None:
    store = SqlStore(db_url)
    try:
        for index, path in enumerate(SQL_SAMPLE):
            result = replay_file(path, store=store, order_prefix=f"t{index}/")
            assert result.passed, result.report()
            assert result.order_id is None or result.order_id.startswith(f"t{index}/")
    finally:
        store.close()


# --- The pytest plugin ---------------------------------------------------------------------------

PLUGIN = ("-p", "no:kci_engine", "-p", "kci_engine.tooling.pytest_plugin", "-p", "no:cacheprovider")


def test_the_plugin_collects_scenario_files_and_shows_the_diff(pytester: pytest.Pytester) -> None:
    pytester.makefile(".kci.yaml", good=BASE, bad=BASE.replace("sequence: 2}", "sequence: 7}"))
    pytester.makefile(".kci.yaml", broken=BASE.replace("event: commit", "event: x"))
    pytester.makefile(".yaml", other="not: a scenario")
    result = pytester.runpytest(*PLUGIN, "-v")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*good.kci.yaml::good PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "*bad.kci.yaml: Cease - acknowledged, committed, completed",
            "  steps[1] commit (line 13):",
            "    - #7 COMMITTED status=IN_PROGRESS",
            "    + #2 COMMITTED status=IN_PROGRESS",
        ]
    )
    assert "broken.kci.yaml:13: steps[1].event: Input should be" in result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    assert "other.yaml" not in result.stdout.str()


def test_the_plugin_holds_a_scenario_to_its_transcript(pytester: pytest.Pytester) -> None:
    path = pytester.makefile(".kci.yaml", t=BASE)
    assert CliRunner().invoke(CLI, ["record", str(path)]).exit_code == 0
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
    path.write_text(BASE.replace("SVC-1", "SVC-9"), encoding="utf-8")
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the KCIs differ from the golden transcript t.transcript.json*"])


# --- Generated lifecycles ------------------------------------------------------------------------

COVERING = covering_scenarios()
REFUSING = refusal_scenarios()


@pytest.mark.parametrize(("name", "scenario"), COVERING, ids=[n for n, _ in COVERING])
def test_a_generated_lifecycle_takes_its_transition_as_the_model_predicts(
    name: str, scenario: Scenario
) -> None:
    result = replay(scenario, name=name)
    assert result.passed, result.report()
    assert name.removeprefix("cover/") in {edge_name(scenario.order_type, e) for e in result.edges}


@pytest.mark.parametrize(("name", "scenario"), REFUSING, ids=[n for n, _ in REFUSING])
def test_a_generated_refusal_is_refused_as_the_model_predicts(
    name: str, scenario: Scenario
) -> None:
    result = replay(scenario, name=name)
    assert result.passed, result.report()


def test_the_generated_lifecycles_cover_every_transition_of_every_machine() -> None:
    coverage = Coverage()
    for name, scenario in COVERING:
        coverage.add(scenario.order_type, replay(scenario, name=name).edges)
    assert coverage.complete(), "\n".join(coverage.lines(detail=50))
    assert len(COVERING) == sum(len(m.edges) for m in SPECS.values())


def test_the_generated_refusals_break_every_guard_of_every_chart() -> None:
    names = {name for name, _ in REFUSING}
    for order_type, machine in SPECS.items():
        for edge in machine.edges:
            for rule in edge.step.rules:
                if edge.step.event.value == "create":
                    continue
                prefix = f"refuse/{order_type.value}:{edge.step.event.value}:{edge.source}/"
                assert any(n.startswith(prefix) for n in names), (edge, rule.label)
        for state in machine.chart.names:
            if state != "NEW":
                assert f"not-allowed/{order_type.value}:{state}" in names


# --- A broken guard is caught by both kinds of test ----------------------------------------------


def test_completing_without_service_id_fails_a_library_scenario_and_generated_refusals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Let COMPLETED through without SERVICE_ID (or serviceId): a hand-written scenario and the
    generated refusals must both notice."""
    for spec in SPECS.values():
        monkeypatch.setattr(spec, "completion", None)
    hand = replay_file(LIBRARY / "provide-delayed-wayleave-reappointed-completed.kci.yaml")
    assert not hand.passed
    assert "- refused MissingField field=serviceOrderItem.serviceCharacteristics" in hand.report()
    failing = sorted(name for name, s in REFUSING if not replay(s, name=name).passed)
    assert failing == [
        "refuse/cease:complete:IN_PROGRESS/no serviceId",
        "refuse/modify:complete:IN_PROGRESS/no serviceId",
        "refuse/provide:complete:IN_PROGRESS/no SERVICE_ID",
    ]


def test_an_answer_that_ignores_resolves_request_fails_generated_and_library_scenarios(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break the charts' return condition (an accepted amendment always resolves PENDING): the
    model, which decides returns itself, and the library both notice."""
    import kci_engine.core._lifecycle as lifecycle

    original = lifecycle.return_target

    def always_resolves(chart: Any, step: Any, stack: list[str], resolves: bool) -> tuple[str, int]:
        return original(chart, step, stack, True)

    monkeypatch.setattr(lifecycle, "return_target", always_resolves)
    failing = [n for n, s in COVERING if not replay(s, name=n).passed]
    assert failing == [
        "cover/provide:accept_amendment:PENDING_AMENDMENT->PENDING[was PENDING]",
        "cover/cease:accept_amendment:PENDING_AMENDMENT->PENDING[was PENDING]",
        "cover/modify:accept_amendment:PENDING_AMENDMENT->PENDING[was PENDING]",
    ]
    hand = replay_file(
        LIBRARY
        / "provide-committed-in-201-resubmission-unresolved-amendment-cancelled-pending.kci.yaml"
    )
    assert "    - #7 AMENDED status=PENDING" in hand.report()


def test_a_condition_or_rule_the_model_does_not_know_stops_the_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chart that gains a condition or a guard the model cannot handle fails generation
    instead of going untested."""
    from kci_engine.tooling.scenarios import generate, refusals

    monkeypatch.setattr(generate, "CONDITIONS", {})
    with pytest.raises(GenerationError, match="does not know the condition 'other amendments"):
        generate.covering(OrderType.PROVIDE)
    monkeypatch.undo()
    monkeypatch.setattr(refusals, "RULE_BREAKERS", {})
    with pytest.raises(GenerationError, match="no way to break rule"):
        refusal_scenarios()


# --- Command errors ------------------------------------------------------------------------------


def test_record_and_replay_report_bad_paths_and_settings(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.kci.yaml", "title: [")
    other = write(tmp_path, "notes.txt", "")
    out = CliRunner().invoke(CLI, ["record", str(broken), str(other)])
    assert out.exit_code == 1
    assert f"ERROR {broken}:1: not valid YAML" in out.output
    assert f"ERROR {other}:0: not a scenario file" in out.output
    bad_db = CliRunner().invoke(CLI, ["replay", "--db", "mysql://x/y", str(FILES[0])])
    assert bad_db.exit_code == 1
    assert "only sqlite:/// and postgresql+psycopg:// are supported" in bad_db.output
    jsonl = tmp_path / "missing" / "out.jsonl"
    unwritable = CliRunner().invoke(CLI, ["replay", str(FILES[0]), "--jsonl", str(jsonl)])
    assert unwritable.exit_code == 1
    assert f"cannot write {jsonl}" in unwritable.output


def test_a_crash_in_one_scenario_does_not_hide_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kci_engine.tooling.scenarios import transcript as files

    crashing = write(tmp_path, "crash.kci.yaml", BASE)
    original = files.replay_file

    def replay_or_crash(path: Path, **kwargs: Any) -> Result:
        if path == crashing:
            raise RuntimeError("boom")
        return original(path, **kwargs)

    monkeypatch.setattr(files, "replay_file", replay_or_crash)
    out = CliRunner().invoke(CLI, ["replay", str(crashing), str(FILES[0])])
    assert out.exit_code == 1
    assert f"ERROR {crashing}: crashed: RuntimeError: boom" in out.output
    assert f"PASS {FILES[0]}" in out.output
