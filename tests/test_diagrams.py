"""The statecharts and the reason-code matrix: complete, deterministic, and committed up to date."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from kci_engine.core.chart import Chart, Edge, Step
from kci_engine.core.codes import OrderStatus as S
from kci_engine.core.codes import OrderType, ReasonCode
from kci_engine.core.contract import REASONS, Need
from kci_engine.core.events import Event as E
from kci_engine.errors import ConfigurationError, EngineError
from kci_engine.orders import SPECS
from kci_engine.tooling import diagrams

ROOT = Path(__file__).resolve().parent.parent
STATECHARTS, DOCS = ROOT / "statecharts", ROOT / "docs"
REGENERATE_HINT = "regenerate with `python tools/statecharts.py`"
HEADER = (
    "generated from the order-type specs — do not edit; "
    "regenerate with: python tools/statecharts.py"
)


def _head(edge: Edge) -> str:
    """How the chart must name an edge, built here independently of the generator."""
    text = f"{edge.step.event} / {edge.step.reason or 'no KCI'}"
    return text + (f" ({edge.condition_label})" if edge.condition_label else "")


def _mermaid_lines_for(text: str, edge: Edge, chart: Chart) -> list[str]:
    """The lines of a Mermaid chart that draw ``edge``: its arrow, its state's description line,
    or a line of a shared note whose heading covers the edge's status."""
    head = _head(edge)
    lines = text.splitlines()
    if edge.source != edge.dest:
        prefix = f"    {edge.source} --> {edge.dest} : {head}"
        return [ln for ln in lines if ln == prefix or ln.startswith(prefix + " [")]
    own = f"    {edge.source} : {head}"
    found = [ln for ln in lines if ln == own or ln.startswith(own + " [")]
    covered = False
    for line in lines:
        if line.strip().startswith("Status unchanged, in "):
            where = line.strip().removeprefix("Status unchanged, in ").rstrip(":")
            covered = edge.source in (
                chart.non_final if where == "every non-final status" else where.split(", ")
            )
        elif line.strip() == "end note":
            covered = False
        elif covered and (line.strip() == head or line.strip().startswith(head + " [")):
            found.append(line)
    return found


# --- Completeness --------------------------------------------------------------------------------


def test_statecharts_hold_a_mmd_and_an_svg_per_order_type() -> None:
    for order_type in OrderType:
        stem = order_type.value.replace("_", "-")
        assert (STATECHARTS / f"{stem}.mmd").is_file()
        assert (STATECHARTS / f"{stem}.svg").is_file()


def test_every_reason_code_appears_on_a_committed_chart() -> None:
    shown = set()
    for path in STATECHARTS.glob("*.mmd"):
        shown |= set(re.findall(r" / ([A-Z_]+)\b", path.read_text(encoding="utf-8")))
    assert {code.value for code in ReasonCode} <= shown


@pytest.mark.parametrize("order_type", list(OrderType))
def test_every_edge_appears_in_the_mermaid_chart_with_its_rules(order_type: OrderType) -> None:
    text = diagrams.mermaid(order_type)
    spec = SPECS[order_type]
    for edge in spec.edges:
        lines = _mermaid_lines_for(text, edge, spec.chart)
        assert lines, f"{order_type}: {edge.source} --{_head(edge)}--> {edge.dest} is not drawn"
        for rule in edge.step.rules:
            assert all(rule.label in line for line in lines), (rule.label, lines)


@pytest.mark.parametrize("order_type", list(OrderType))
def test_mermaid_chart_has_header_start_and_finals(order_type: OrderType) -> None:
    lines = diagrams.mermaid(order_type).splitlines()
    assert lines[0] == f"%% {HEADER}"
    assert "stateDiagram-v2" in lines
    chart = SPECS[order_type].chart
    assert f"    [*] --> {chart.initial}" in lines
    for state in chart.states:
        assert any(state.name in line for line in lines)
        if state.final:
            assert f"    {state.name} --> [*]" in lines


def test_status_unchanged_edges_are_drawn_once_per_label() -> None:
    """update / add_information / warn apply in every status the supplier sets: one note, not
    18 loops."""
    text = diagrams.mermaid(OrderType.PROVIDE)
    assert text.count("update / UPDATE") == 1
    assert (
        "Status unchanged, in ACKNOWLEDGED, IN_PROGRESS, HELD, PENDING, PENDING_AMENDMENT, "
        "PENDING_CANCELLATION:"
    ) in text
    assert "    PENDING : request_resubmission / RESUBMIT [problemCode, text]" in text
    assert not re.search(r"^ +(\w+) --> \1 :", text, flags=re.MULTILINE)


def test_return_edges_name_the_status_they_return_to() -> None:
    text = diagrams.mermaid(OrderType.PROVIDE)
    lines = text.splitlines()
    assert (
        "    HELD --> IN_PROGRESS : resume / RESUMED (was IN_PROGRESS) [targetDate unchanged]"
        in lines
    )
    assert (
        "    HELD --> ACKNOWLEDGED : resume / UPDATE (was ACKNOWLEDGED) "
        "[an order change or text or supplierNotes]"
    ) in lines


@pytest.mark.parametrize("order_type", list(OrderType))
def test_dot_picture_names_every_status_event_and_reason_code(order_type: OrderType) -> None:
    source = diagrams.dot(order_type)
    assert source.startswith(f"// {HEADER}")
    spec = SPECS[order_type]
    edges = spec.edges
    for word in {e.step.event.value for e in edges} | {e.step.reason for e in edges} - {None}:
        assert f"{word} /" in source or f"/ {word}" in source, word
    for state in spec.chart.finals:
        assert f"{state} [shape=doublecircle" in source


# --- What each step must carry -------------------------------------------------------------------


def _step(order_type: OrderType, event: E, source: str | None = None) -> Step:
    return next(
        e.step
        for e in SPECS[order_type].edges
        if e.step.event is event and (source is None or e.source == source)
    )


@pytest.mark.parametrize(
    ("order_type", "event", "expected"),
    [
        (OrderType.PROVIDE, E.COMPLETE, ["SERVICE_ID"]),
        (OrderType.MODIFY, E.COMPLETE, ["serviceId"]),
        (OrderType.CEASE, E.COMPLETE, ["serviceId"]),
        (OrderType.UNSOLICITED_CEASE, E.COMPLETE, []),
        (OrderType.PROVIDE, E.DELAY, ["problemCode (Delay)"]),
        (OrderType.PROVIDE, E.REQUEST_INFORMATION, ["problemCode (Inform)", "text"]),
        (OrderType.PROVIDE, E.REQUEST_REAPPOINTMENT, ["problemCode (Reappoint)"]),
        (OrderType.PROVIDE, E.CANCEL, ["text", "problemCode (Cancel)"]),
        (OrderType.PROVIDE, E.COMMIT, ["committedDate, targetDate"]),
        (
            OrderType.PROVIDE,
            E.REAPPOINTED,
            ["new appointmentTimeslot or appointmentSupplierReference", "new targetDate"],
        ),
        (OrderType.PROVIDE, E.RESUME, ["targetDate unchanged"]),
        (OrderType.PROVIDE, E.UPDATE, ["an order change or text or supplierNotes"]),
        (OrderType.PROVIDE, E.ACKNOWLEDGE, ["supplierOrderReference"]),
        (
            OrderType.PROVIDE,
            E.COMMITTED_IN_201,
            ["supplierOrderReference", "committedDate, targetDate"],
        ),
        (
            OrderType.PROVIDE,
            E.REJECT_AMENDMENT,
            ["amendment in flight", "problemCode", "text", "amendment ref"],
        ),
        (
            OrderType.CEASE,
            E.REJECT_CANCELLATION,
            ["cancellation in flight", "problemCode", "text", "cancellation ref"],
        ),
        (OrderType.PROVIDE, E.AMENDMENT_RECEIVED, ["amendment id/reference"]),
    ],
)
def test_requirements_name_the_rules_and_the_contract(
    order_type: OrderType, event: E, expected: list[str]
) -> None:
    spec = SPECS[order_type]
    assert diagrams.requirements(spec, _step(order_type, event)) == expected


def test_a_delay_before_commitment_is_left_with_the_commitment_or_an_update() -> None:
    spec = SPECS[OrderType.PROVIDE]
    out_of_held = {
        (e.step.event, e.dest, e.condition_label): diagrams.requirements(spec, e.step)
        for e in spec.edges
        if e.source == S.HELD and e.step.event in (E.COMMIT, E.RESUME)
    }
    assert out_of_held == {
        (E.COMMIT, S.IN_PROGRESS, "was ACKNOWLEDGED"): ["committedDate, targetDate"],
        (E.RESUME, S.IN_PROGRESS, "was IN_PROGRESS"): ["targetDate unchanged"],
        (E.RESUME, S.ACKNOWLEDGED, "was ACKNOWLEDGED"): [
            "an order change or text or supplierNotes"
        ],
    }


def test_created_in_progress_needs_dates_and_both_need_the_reference() -> None:
    spec = SPECS[OrderType.UNSOLICITED_CEASE]
    created = [e for e in spec.edges if e.step.event is E.CREATE]
    notes = {e.dest: diagrams.requirements(spec, e.step) for e in created}
    assert notes == {
        S.ACKNOWLEDGED: ["supplierOrderReference"],
        S.IN_PROGRESS: ["supplierOrderReference", "committedDate, targetDate"],
    }


@pytest.mark.parametrize("order_type", list(OrderType))
def test_requirements_agree_with_the_contract_tables(order_type: OrderType) -> None:
    spec = SPECS[order_type]
    for edge in spec.edges:
        reason = edge.step.reason
        if reason is None:
            continue
        notes = diagrams.requirements(spec, edge.step)
        rule = REASONS[reason]
        assert any(n.startswith("problemCode") for n in notes) == (
            rule.problem_code is Need.REQUIRED
        )
        assert ("text" in notes) == (rule.text is Need.REQUIRED or E.CANCEL is edge.step.event)


# --- The matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize("order_type", list(OrderType))
def test_matrix_has_one_row_per_edge(order_type: OrderType) -> None:
    text = diagrams.matrix_markdown(order_type)
    assert text.startswith(f"<!-- {HEADER}")
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| status")]
    assert len(rows) == len(SPECS[order_type].edges)
    assert "| IN_PROGRESS | `delay` | HELD | `DELAY` | problemCode (Delay) |" in rows or (
        order_type is OrderType.UNSOLICITED_CEASE
    )


def test_matrix_rows_follow_chart_order_then_event() -> None:
    chart = SPECS[OrderType.PROVIDE].chart
    rows = [
        ln.split(" | ")
        for ln in diagrams.matrix_markdown(OrderType.PROVIDE).splitlines()
        if ln.startswith("| ") and not ln.startswith("| status")
    ]
    keys = [(chart.names.index(r[0].lstrip("| ")), r[1]) for r in rows]
    assert keys == sorted(keys)


def test_matrix_page_lists_which_events_send_every_reason_code() -> None:
    page = diagrams.matrix_page()
    for code in ReasonCode:
        assert f"| `{code}` |" in page
    assert "| `CREATED` | — | — | — | `create` |" in page
    for order_type in OrderType:
        assert f"## {order_type.value}" in page


# --- Rendering -----------------------------------------------------------------------------------


def test_generation_is_deterministic() -> None:
    """Two runs give the same bytes. Needs Graphviz: without it, fails with the install hint."""
    first = diagrams.generate(STATECHARTS, DOCS)
    assert diagrams.generate(STATECHARTS, DOCS) == first
    assert {p.name for p in first} == {
        f"{t.value.replace('_', '-')}.{ext}" for t in OrderType for ext in ("mmd", "svg")
    } | {"reason-code-matrix.md", "contract.md"}


def test_the_contract_page_tables_are_generated_from_the_contract_tables() -> None:
    from kci_engine.tooling import contract_page

    page = (DOCS / "contract.md").read_text(encoding="utf-8")
    assert contract_page.fill(page) == page
    stale = page.replace("| a problem is delaying the order |", "| late |")
    assert stale != page
    assert contract_page.fill(stale) == page
    for name in contract_page.REGIONS:
        assert f"<!-- generated: {name} -->" in page
    for reason in ReasonCode:
        assert f"| `{reason}` |" in page


def test_svg_carries_the_header_and_the_source_hash_not_the_graphviz_version() -> None:
    svg = diagrams.render_svg(diagrams.dot(OrderType.PROVIDE))
    assert "Generated by graphviz" not in svg
    assert diagrams.HEADER in svg
    assert re.search(r"<!-- dot source sha256: [0-9a-f]{64} -->", svg)
    assert svg.count("<svg ") == 1


def test_missing_graphviz_names_the_binary_and_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"`dot`.*apt-get install graphviz"):
        diagrams.render_svg("digraph {}")


def test_dot_failure_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="dot -Tsvg failed"):
        diagrams.render_svg("digraph { a -> }")


# --- Drift ---------------------------------------------------------------------------------------


def test_committed_statecharts_and_matrix_are_up_to_date() -> None:
    """The drift test: a chart changed without regenerating fails here, naming file and command."""
    problems = diagrams.check(STATECHARTS, DOCS, root=ROOT)
    assert not problems, "\n".join(problems)


def test_generated_files_pass_the_check(tmp_path: Path) -> None:
    statecharts, docs = tmp_path / "statecharts", tmp_path / "docs"
    assert len(diagrams.write(statecharts, docs)) == 9
    assert diagrams.check(statecharts, docs) == []
    assert diagrams.write(statecharts, docs) == []


def test_missing_files_are_reported(tmp_path: Path) -> None:
    problems = diagrams.check(tmp_path / "statecharts", tmp_path / "docs")
    assert len(problems) == 9
    assert f"statecharts/provide.mmd is missing: {REGENERATE_HINT}" in problems


def _changed(monkeypatch: pytest.MonkeyPatch, change: Callable[[Step], Step]) -> None:
    spec = SPECS[OrderType.PROVIDE]
    chart = spec.chart
    changed = Chart(chart.order_type, chart.initial, chart.states, tuple(map(change, chart.steps)))
    monkeypatch.setitem(SPECS, OrderType.PROVIDE, spec.with_chart(changed))  # type: ignore[arg-type]


def _provide_with_changed_reject(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provide orders may now be rejected from ACKNOWLEDGED too."""
    _changed(
        monkeypatch,
        lambda s: (
            replace(s, sources=(S.SENT_TO_SUPPLIER, S.ACKNOWLEDGED)) if s.event is E.REJECT else s
        ),
    )


def test_a_changed_chart_is_reported_by_file(monkeypatch: pytest.MonkeyPatch) -> None:
    _provide_with_changed_reject(monkeypatch)
    problems = diagrams.check(STATECHARTS, DOCS, root=ROOT)
    assert problems == [
        f"docs/reason-code-matrix.md is out of date: {REGENERATE_HINT}",
        f"statecharts/provide.mmd is out of date: {REGENERATE_HINT}",
        f"statecharts/provide.svg is out of date: {REGENERATE_HINT}",
    ]


def test_an_svg_not_rendered_from_the_current_source_is_reported(tmp_path: Path) -> None:
    statecharts, docs = tmp_path / "statecharts", tmp_path / "docs"
    diagrams.write(statecharts, docs)
    svg = statecharts / "cease.svg"
    svg.write_text(svg.read_text().replace("dot source sha256: ", "dot source sha256: 0"))
    (statecharts / "modify.svg").write_text("<svg/>")
    assert diagrams.check(statecharts, docs, root=tmp_path) == [
        f"statecharts/cease.svg is out of date: {REGENERATE_HINT}",
        f"statecharts/modify.svg is out of date: {REGENERATE_HINT}",
    ]


# --- tools/statecharts.py ------------------------------------------------------------------------


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("statecharts_tool", ROOT / "tools/statecharts.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_check_passes_on_the_committed_files() -> None:
    assert _tool().main(["--check"]) == 0


def test_tool_check_exits_1_naming_the_stale_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _provide_with_changed_reject(monkeypatch)
    assert _tool().main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"statecharts/provide.mmd is out of date: {REGENERATE_HINT}" in err
    assert "cease.mmd" not in err


def test_tool_writes_then_reports_up_to_date(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    assert tool.main([]) == 0
    assert "wrote statecharts/provide.svg" in capsys.readouterr().out
    assert tool.main([]) == 0
    assert "up to date" in capsys.readouterr().out
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tool.main([]) == 2
    assert "apt-get install graphviz" in capsys.readouterr().err


def test_a_return_with_one_possible_target_is_drawn_as_a_plain_arrow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With delay only from IN_PROGRESS, resume can only go back there: no box, a named arrow."""
    _changed(
        monkeypatch, lambda s: replace(s, sources=(S.IN_PROGRESS,)) if s.event is E.DELAY else s
    )
    source = diagrams.dot(OrderType.PROVIDE)
    assert re.search(r"HELD -> IN_PROGRESS \[.*resume / RESUMED \(was IN_PROGRESS\)", source)


def test_messages_name_files_outside_the_root_in_full(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    problems = diagrams.check(tmp_path / "charts", tmp_path / "docs", root=elsewhere)
    assert f"{(tmp_path / 'charts' / 'provide.mmd').as_posix()} is missing" in "\n".join(problems)


# --- kci-engine chart: the read-only way to look at a chart -----------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("mermaid", lambda t: diagrams.mermaid(t)),
        ("dot", lambda t: diagrams.dot(t)),
        ("matrix", lambda t: diagrams.matrix_markdown(t)),
    ],
)
def test_chart_command_prints_what_the_engine_runs_and_writes_nothing(
    fmt: str, expected: Callable[[OrderType], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from kci_engine.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["chart", "cease", "--format", fmt])
    assert result.exit_code == 0, result.output
    assert result.output == expected(OrderType.CEASE)
    assert list(tmp_path.iterdir()) == []


def test_chart_command_renders_svg_or_says_graphviz_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from kci_engine.cli import main

    result = CliRunner().invoke(main, ["chart", "provide", "--format", "svg"])
    assert result.exit_code == 0, result.output
    assert result.output.count("<svg ") == 1
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = CliRunner().invoke(main, ["chart", "provide", "--format", "svg"])
    assert missing.exit_code == 1
    assert "apt-get install graphviz" in missing.output
    assert "Traceback" not in missing.output
