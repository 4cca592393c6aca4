"""Statecharts and the reason-code matrix, generated from the charts the engine runs.

The order-type specs in :mod:`kci_engine.orders` and the contract tables in
:mod:`kci_engine.core.contract` are the single source: every diagram and table here is derived
from the charts' expanded edges, their rules and what the tables demand of each edge's KCI
(:meth:`~kci_engine.core.spec.OrderTypeSpec.edge_demands`). Nothing is listed by hand per event,
so the pictures cannot say something the engine does not do; the committed files are checked for
drift by the tests.

Outputs, per order type (file names use hyphens: ``unsolicited-cease``):

- ``statecharts/<type>.mmd``: a Mermaid ``stateDiagram-v2``;
- ``statecharts/<type>.svg``: the Graphviz rendering of :func:`dot`, which the reader looks at;
- ``docs/reason-code-matrix.md``: one page, a table per order type.

Transitions that leave the status unchanged are many (update, add_information and warn are
allowed in every non-final status), so they are drawn compactly: those shared by at least half of
the non-final statuses are listed once in a note (the legend, in the SVG), the others inside their
status. The Mermaid text lists every other edge on its own line; the SVG draws about one arrow per
step, using statechart notation: dashed boxes around the statuses a waiting status returns into,
with a history node ``H`` for "back to the status it came from".

:func:`check` compares the committed files with what the code generates, without Graphviz: an SVG
carries the hash of the DOT source it was rendered from, since another Graphviz build may lay the
same source out slightly differently.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.chart import RETURN_RESOLVED, Chart, Edge, Step
from ..core.codes import OrderType, ReasonCode
from ..core.contract import REASONS, Need
from ..core.spec import OrderTypeSpec
from ..errors import ConfigurationError, EngineError
from ..orders import SPECS
from . import contract_page

REGENERATE = "python tools/statecharts.py"
HEADER = f"generated from the order-type specs — do not edit; regenerate with: {REGENERATE}"
MATRIX_NAME = "reason-code-matrix.md"
_SOURCE_HASH = re.compile(r"<!-- dot source sha256: ([0-9a-f]{64}) -->")

# --- What each step must carry -------------------------------------------------------------------


def requirements(spec: OrderTypeSpec, step: Step) -> list[str]:
    """The guard notes of ``step``: its rules' labels, then what the contract tables demand of
    its KCI (``problemCode (Delay)``, ``text``, ``amendment ref``, ``SERVICE_ID``...) on each of
    its edges (:meth:`OrderTypeSpec.edge_demands`), in that order, each once."""
    notes = [rule.label for rule in step.rules]
    for edge in spec.edges:
        if edge.step is step:
            notes += spec.edge_demands(edge).labels()
    return list(dict.fromkeys(notes))


# --- The chart, arranged for drawing -------------------------------------------------------------


def file_stem(order_type: OrderType) -> str:
    """The file name of an order type's outputs: ``unsolicited-cease`` for UNSOLICITED_CEASE."""
    return order_type.value.replace("_", "-")


def label(order_type: OrderType, edge: Edge) -> str:
    """``event / REASON_CODE (condition) [guards]``; ``no KCI`` for a step that sends none."""
    text = f"{edge.step.event} / {edge.step.reason or 'no KCI'}"
    if edge.condition_label is not None:
        text += f" ({edge.condition_label})"
    if notes := requirements(SPECS[order_type], edge.step):
        text += f" [{', '.join(notes)}]"
    return text


@dataclass
class _Drawing:
    """A chart split the way the pictures draw it.

    ``edges`` are sorted by status (in chart order), event, then next status; those of
    ``moves`` change the status. Status-unchanged edges with the same label are kept once: in
    ``shared`` (with the statuses they apply in) when they apply in at least half of the non-final
    statuses, otherwise in ``own`` under each status.
    """

    chart: Chart
    order: dict[str, int]
    edges: list[Edge]
    moves: list[Edge]
    own: dict[str, list[Edge]]
    shared: list[tuple[tuple[str, ...], list[Edge]]]
    non_final: tuple[str, ...]

    def where(self, states: tuple[str, ...]) -> str:
        return "every non-final status" if states == self.non_final else ", ".join(states)


def _drawing(order_type: OrderType) -> _Drawing:
    spec = SPECS[order_type]
    chart = spec.chart
    order = {state: i for i, state in enumerate(chart.names)}
    edges = sorted(spec.edges, key=lambda e: (order[e.source], str(e.step.event), order[e.dest]))
    non_final = chart.non_final
    stays: dict[str, list[Edge]] = defaultdict(list)
    for edge in edges:
        if edge.source == edge.dest:
            stays[label(order_type, edge)].append(edge)
    own: dict[str, list[Edge]] = defaultdict(list)
    shared: dict[tuple[str, ...], list[Edge]] = defaultdict(list)
    for _, same in sorted(stays.items()):
        if 2 * len(same) >= len(non_final):
            shared[tuple(e.source for e in same)].append(same[0])
        else:
            for edge in same:
                own[edge.source].append(edge)
    return _Drawing(
        chart=chart,
        order=order,
        edges=edges,
        moves=[e for e in edges if e.source != e.dest],
        own=dict(own),
        shared=sorted(shared.items(), key=lambda group: -len(group[0])),
        non_final=non_final,
    )


# --- Mermaid -------------------------------------------------------------------------------------


def mermaid(order_type: OrderType) -> str:
    """The order type's chart as a Mermaid ``stateDiagram-v2``: the complete, diffable text.

    Every status and every edge, labelled ``event / REASON_CODE (condition) [guards]``. Status-
    unchanged edges are description lines of their state, or lines of one note when they apply
    in at least half of the non-final statuses.
    """
    d = _drawing(order_type)
    finals = [s for s in d.chart.names if s in d.chart.finals]
    lines = [
        f"%% {HEADER}",
        f"%% {order_type.value} order: event / KCI reason code (condition) [must carry]",
        "stateDiagram-v2",
        "    direction LR",
        "    classDef final stroke-width:3px",
        f"    [*] --> {d.chart.initial}",
        *(f"    {e.source} --> {e.dest} : {label(order_type, e)}" for e in d.moves),
        *(f"    {s} : {label(order_type, e)}" for s, es in d.own.items() for e in es),
    ]
    for states, shared in d.shared:
        lines += [
            f"    note left of {d.chart.initial}",
            f"        Status unchanged, in {d.where(states)}:",
            *(f"        {label(order_type, e)}" for e in shared),
            "    end note",
        ]
    lines += [f"    {state} --> [*]" for state in finals]
    lines.append(f"    class {','.join(finals)} final")
    return "\n".join(lines) + "\n"


# --- Graphviz ------------------------------------------------------------------------------------

_HAPPY, _PROBLEM, _INFO, _SILENT = "#1a7f37", "#b42318", "#1f4e9c", "#6e7781"


@dataclass(frozen=True)
class _Arrow:
    """One drawn arrow. Several tails meet at a junction dot, or leave from the border of box
    ``box`` when they are exactly its statuses; ``back`` is the box whose history node it enters."""

    tails: tuple[str, ...]
    head: str
    color: str
    box: int | None = None
    back: int | None = None


def _color(step: Step) -> str:
    """The colour of a step's arrow: happy path, needs a problemCode, other KCI, or no KCI."""
    if step.reason is None:
        return _SILENT
    need = REASONS[step.reason].problem_code
    if need is Need.FORBIDDEN:
        return _HAPPY
    return _PROBLEM if need is Need.REQUIRED else _INFO


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rows(order_type: OrderType, step: Step, condition: str | None, size: int = 8) -> list[str]:
    """HTML-label lines for one step: ``event / CODE (condition)``, then its guards, smaller.
    (No bold run inside a line: dot measures it in the regular face, so it would overrun.)"""
    head = f"{_html(step.event)} / {step.reason or 'no KCI'}"
    if condition:
        head += f" ({_html(condition)})"
    lines: list[str] = []
    for note in requirements(SPECS[order_type], step):
        if lines and len(lines[-1]) + len(note) <= 38:
            lines[-1] += f", {note}"
        else:
            lines.append(note)
    return [head, *(f'<font point-size="{size}">[{_html(line)}]</font>' for line in lines)]


def _boxes(d: _Drawing) -> list[frozenset[str]]:
    """Nested boxes of the statuses that waiting statuses return into, smallest first.

    Each box is the set of statuses one RETURN step can go back to from one status. A set that
    would overlap a box without nesting gets no box of its own: its arrow points into the smallest
    box holding all its targets, and "back to the status it came from" stays true.
    """
    targets: dict[tuple[int, str], set[str]] = defaultdict(set)
    for e in d.moves:
        if e.step.returns:
            targets[(id(e.step), e.source)].add(e.dest)
    candidates = sorted(
        {frozenset(t) for t in targets.values() if len(t) > 1},
        key=lambda box: (len(box), sorted(d.order[s] for s in box)),
    )
    boxes: list[frozenset[str]] = []
    for box in candidates:
        if all(box <= b or b <= box or not box & b for b in boxes):
            boxes.append(box)
    return boxes


def _arrows(
    order_type: OrderType, d: _Drawing, boxes: list[frozenset[str]]
) -> dict[_Arrow, list[str]]:
    """The arrows to draw with their label lines; steps with the same ends and colour share one.

    A step's edges become one arrow: from a box's border when its sources are exactly that box,
    through a junction dot when they are several other statuses, into a box's history node when
    it returns to where the order came from.
    """
    groups: dict[tuple[int, str], list[Edge]] = defaultdict(list)
    for e in d.moves:
        groups[(id(e.step), e.source if e.step.returns else e.dest)].append(e)
    arrows: dict[_Arrow, list[str]] = defaultdict(list)
    for edges in groups.values():
        step, color = edges[0].step, _color(edges[0].step)
        into = {e.dest for e in edges}
        box = next((i for i, b in enumerate(boxes) if into <= b), None) if len(into) > 1 else None
        sources = tuple(sorted({e.source for e in edges}, key=d.order.__getitem__))
        if step.returns and box is not None:
            resolvable = ", ".join(s.name for s in d.chart.states if s.resolvable)
            past = f"or past {resolvable}, if resolved"
            arrow = _Arrow(sources, f"H{box}", color, back=box)
            arrows[arrow] += _rows(order_type, step, past if step.dest == RETURN_RESOLVED else None)
        elif step.returns or len(sources) == 1:
            for e in edges:
                when = e.condition_label
                arrows[_Arrow((e.source,), e.dest, color)] += _rows(order_type, step, when)
        else:
            box = boxes.index(frozenset(sources)) if frozenset(sources) in boxes else None
            arrows[_Arrow(sources, edges[0].dest, color, box)] += _rows(order_type, step, None)
    return arrows


def _node(order_type: OrderType, d: _Drawing, state: str, main: set[str]) -> str:
    if state in d.chart.finals:
        into = {_color(e.step) for e in d.moves if e.dest == state}
        color = into.pop() if len(into) == 1 else "black"
        return (
            f'{state} [shape=doublecircle, fontsize=10, margin=0.06, fillcolor="white",'
            f' color="{color}"]'
        )
    rows = [f"<b>{state}</b>"]
    for edge in d.own.get(state, []):
        first, *rest = _rows(order_type, edge.step, None, size=7)
        if edge.condition_label:
            rest.insert(0, f'<font point-size="7">({_html(edge.condition_label)})</font>')
        rows += [f'<font point-size="8">↻ {first}</font>', *rest]
    fill = "#fff8e1" if state in d.chart.waits else "#eef4fb"
    extra = ", group=main, penwidth=2.5" if state in main else ""
    return f'{state} [label=<{"<br/>".join(rows)}>, fillcolor="{fill}"{extra}]'


def _legend(d: _Drawing, boxes: list[frozenset[str]]) -> str:
    rows = [
        f'<font color="{_HAPPY}"><b>━ happy path</b></font>   '
        f'<font color="{_PROBLEM}">━ KCI with a problemCode</font>   '
        f'<font color="{_INFO}">━ other KCI</font>   '
        f'<font color="{_SILENT}">┅ no KCI</font>',
        "event / KCI reason code (condition) [must carry]",
    ]
    if boxes:
        rows += [
            "an arrow from a dashed box's border: from every status in the box",
            "H: back to the status the order was in before, inside the box",
        ]
    for states, shared in d.shared:
        rows.append(f"<b>status unchanged, in {_html(d.where(states))}:</b>")
        for edge in shared:
            rows.append(f"↻ {_html(label(d.chart.order_type, edge))}")
    body = "".join(f'<tr><td align="left">{row}</td></tr>' for row in rows)
    return (
        'legend [shape=plain, style="", fontsize=9, label=<<table border="1" cellborder="0" '
        f'cellpadding="3" color="#d0d7de">{body}</table>>]'
    )


def dot(order_type: OrderType) -> str:
    """The order type's chart as Graphviz DOT source: the picture of :func:`mermaid`.

    Drawn top to bottom along the happy path (bold, green); finals are double circles. The
    statuses a waiting status returns into are nested in dashed boxes with a history node ``H``
    ("back to the status it came from"), and a step allowed from every status of a box leaves from
    the box's border, so the picture has about one arrow per step rather than one per edge.
    """
    d = _drawing(order_type)
    boxes = _boxes(d)
    main = {s for e in d.moves if _color(e.step) == _HAPPY for s in (e.source, e.dest)}

    def home(states: frozenset[str]) -> int | None:
        """The smallest box holding all of ``states`` (``None``: the whole graph)."""
        return next((i for i, box in enumerate(boxes) if states <= box), None)

    inside: dict[int | None, list[str]] = defaultdict(list)
    for i in range(len(boxes)):
        inside[i].append(
            f'H{i} [shape=circle, label="H", width=0.3, fixedsize=true, fontsize=10,'
            ' fillcolor="white"]'
        )
    for state in d.chart.names:
        inside[home(frozenset({state}))].append(_node(order_type, d, state, main))
    arrows: list[str] = []
    for n, (arrow, rows) in enumerate(_arrows(order_type, d, boxes).items()):
        style = f'color="{arrow.color}"'
        style += {_HAPPY: ", penwidth=2.5, weight=10", _SILENT: ", style=dashed"}.get(
            arrow.color, ""
        )
        text = f'fontcolor="{arrow.color}", label=<{"<br/>".join(rows)}>'
        tails = frozenset(arrow.tails)
        if arrow.back is not None:
            # dot misplaces the labels of edges into a nested cluster: a label node instead.
            where = home(tails | boxes[arrow.back])
            inside[where].append(f'L{n} [shape=plain, style="", fontsize=9, {text}]')
            arrows += [f"{arrow.tails[0]} -> L{n} [{style}, arrowhead=none]"]
            arrows += [f"L{n} -> {arrow.head} [{style}]"]
        elif arrow.box is not None:
            rep = arrow.tails[-1]
            arrows.append(f"{rep} -> {arrow.head} [{text}, {style}, ltail=cluster_{arrow.box}]")
        elif len(arrow.tails) > 1:
            inside[home(tails | {arrow.head})].append(
                f'J{n} [shape=point, width=0.07, color="{arrow.color}", label=""]'
            )
            arrows += [f"{tail} -> J{n} [{style}, arrowhead=none]" for tail in arrow.tails]
            arrows.append(f"J{n} -> {arrow.head} [{text}, {style}]")
        else:
            arrows.append(f"{arrow.tails[0]} -> {arrow.head} [{text}, {style}]")
    title = order_type.value.replace("_", " ")
    lines = [
        f"// {HEADER}",
        f'digraph "{order_type.value}" {{',
        '    graph [rankdir=TB, compound=true, newrank=true, fontname="Helvetica", fontsize=16,',
        f"        label=<<b>{title} order</b>>, labelloc=t, nodesep=0.35, ranksep=0.5]",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11,'
        ' margin="0.12,0.05"]',
        '    edge [fontname="Helvetica", fontsize=9, arrowsize=0.7]',
        '    start [shape=point, width=0.18, label=""]',
        f"    start -> {d.chart.initial} [penwidth=2.5, weight=10]",
        *_tree(boxes, inside, None, 1),
        *(f"    {arrow}" for arrow in arrows),
        f"    {_legend(d, boxes)}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _tree(
    boxes: list[frozenset[str]], inside: dict[int | None, list[str]], box: int | None, depth: int
) -> Iterator[str]:
    """The statements inside ``box``, then its child boxes as nested clusters."""
    pad = "    " * depth
    yield from (pad + line for line in inside[box])
    for child, members in enumerate(boxes):
        parent = next((j for j in range(child + 1, len(boxes)) if members < boxes[j]), None)
        if parent == box:
            yield f"{pad}subgraph cluster_{child} {{"
            yield f'{pad}    graph [style="rounded,dashed", color="#8c959f", label="", margin=10]'
            yield from _tree(boxes, inside, child, depth + 1)
            yield f"{pad}}}"


def render_svg(dot_source: str) -> str:
    """Render DOT source to SVG with the Graphviz ``dot`` binary.

    The Graphviz version comment is replaced by the generated-file header and the SHA-256 of
    ``dot_source``, which :func:`check` compares: the layout itself may differ slightly between
    Graphviz builds, so drift is judged on the source the picture was drawn from.

    Raises:
        ConfigurationError: ``dot`` is not on PATH (install Graphviz).
        EngineError: ``dot`` failed on the source.
    """
    exe = shutil.which("dot")
    if exe is None:
        raise ConfigurationError(
            "the Graphviz `dot` binary is not on PATH; the statechart SVGs need it: "
            "install Graphviz (`apt-get install graphviz`, or `brew install graphviz`)"
        )
    run = subprocess.run(
        [exe, "-Tsvg"],
        input=dot_source,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    if run.returncode != 0:
        raise EngineError(f"dot -Tsvg failed ({run.returncode}): {run.stderr.strip()}")
    svg = re.sub(r"<!-- Generated by graphviz.*?-->\n", "", run.stdout, flags=re.DOTALL)
    stamp = f"<!-- {HEADER} -->\n<!-- dot source sha256: {_sha256(dot_source)} -->\n"
    svg = svg.replace("<svg ", stamp + "<svg ", 1)
    return "\n".join(line.rstrip() for line in svg.splitlines()) + "\n"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- The reason-code matrix -----------------------------------------------------------------------


def matrix_markdown(order_type: OrderType) -> str:
    """The order type's status x event table on its own, under the generated-file header.

    One row per edge: status | event | next status | reason code | must carry, sorted by status
    (in chart order), then event, then next status.
    """
    return "\n".join([f"<!-- {HEADER} -->", "", *_matrix_section(order_type)]) + "\n"


def matrix_page() -> str:
    """``docs/reason-code-matrix.md``: which events send each reason code, per order type, then
    the table of every order type (one page, so the order types can be compared)."""
    types = list(OrderType)
    sends: dict[tuple[ReasonCode, OrderType], set[str]] = defaultdict(set)
    for order_type in types:
        for edge in SPECS[order_type].edges:
            if edge.step.reason is not None:
                sends[(edge.step.reason, order_type)].add(f"`{edge.step.event}`")
    lines = [
        "---",
        "hide:",
        "  - toc",  # the tables are wide: give them the table of contents' width too
        "---",
        f"<!-- {HEADER} -->",
        "",
        "# Reason-code matrix",
        "",
        "Generated from the charts the engine runs (`engine/orders/`) and the contract tables",
        "(`engine/core/contract.py`). For each status, the events the engine accepts there; any",
        "other event is refused with `EventNotAllowed`. *Must carry* lists the step's own rules,",
        "then what the tables demand of its KCI: problemCode (valid for the situation in brackets,",
        "a column of the Fibre Cafe problem-code table), text, the request reference, the fields",
        "the new status carries, new or unchanged values. The pictures are in",
        "`statecharts/<order-type>.svg`; [the KCI contract](contract.md) has the tables.",
        "",
        "## Which events send each reason code",
        "",
        "| reason code | " + " | ".join(t.value for t in types) + " |",
        "|---" * (len(types) + 1) + "|",
    ]
    for reason in ReasonCode:
        cells = [", ".join(sorted(sends[(reason, t)])) or "—" for t in types]
        lines.append(f"| `{reason}` | " + " | ".join(cells) + " |")
    for order_type in types:
        lines += ["", *_matrix_section(order_type)]
    return "\n".join(lines) + "\n"


def _matrix_section(order_type: OrderType) -> list[str]:
    rows = [
        f"## {order_type.value}",
        "",
        f"Statechart: `statecharts/{file_stem(order_type)}.svg`.",
        "",
        "| status | event | next status | reason code | must carry |",
        "|---|---|---|---|---|",
    ]
    for e in _drawing(order_type).edges:
        nxt = "unchanged" if e.source == e.dest else e.dest
        if e.condition_label is not None:
            nxt += f" ({e.condition_label})"
        reason = f"`{e.step.reason}`" if e.step.reason else "no KCI"
        carry = ", ".join(requirements(SPECS[order_type], e.step)) or "—"
        rows.append(f"| {e.source} | `{e.step.event}` | {nxt} | {reason} | {carry} |")
    return rows


# --- Files ---------------------------------------------------------------------------------------


def _texts(statecharts_dir: Path, docs_dir: Path) -> dict[Path, str]:
    """Every output but the SVGs, by path; the contract page's generated tables when the page
    is there (its prose is written by hand)."""
    texts = {statecharts_dir / f"{file_stem(t)}.mmd": mermaid(t) for t in OrderType}
    texts[docs_dir / MATRIX_NAME] = matrix_page()
    contract = docs_dir / contract_page.PAGE
    if contract.exists():
        texts[contract] = contract_page.fill(contract.read_text(encoding="utf-8"))
    return texts


def _svg_sources(statecharts_dir: Path) -> dict[Path, str]:
    """The DOT source of every SVG, by the SVG's path."""
    return {statecharts_dir / f"{file_stem(t)}.svg": dot(t) for t in OrderType}


def generate(statecharts_dir: Path, docs_dir: Path) -> dict[Path, str]:
    """Every generated file and its content: ``<statecharts_dir>/<type>.mmd`` and ``.svg`` for
    each order type, and ``<docs_dir>/reason-code-matrix.md``.

    Raises:
        ConfigurationError: Graphviz ``dot`` is not installed.
    """
    svgs = {path: render_svg(source) for path, source in _svg_sources(statecharts_dir).items()}
    return dict(sorted({**_texts(statecharts_dir, docs_dir), **svgs}.items()))


def check(statecharts_dir: Path, docs_dir: Path, root: Path | None = None) -> list[str]:
    """What is missing or out of date among the committed files, one message per file.

    An SVG is judged by the hash of the DOT source it was rendered from (see
    :func:`render_svg`), so this needs no Graphviz and does not fail when another Graphviz build
    would place a curve differently. Paths in the messages are relative to ``root`` (by default
    the directory holding both output directories).
    """
    if root is None:
        root = Path(os.path.commonpath([statecharts_dir.resolve(), docs_dir.resolve()]))
    expected = _texts(statecharts_dir, docs_dir)
    stamps = {path: _sha256(source) for path, source in _svg_sources(statecharts_dir).items()}
    stale: list[Path] = []
    for path in sorted({*expected, *stamps}):
        try:
            have = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            stale.append(path)
            continue
        if path in expected:
            if have != expected[path]:
                stale.append(path)
        elif (found := _SOURCE_HASH.search(have)) is None or found.group(1) != stamps[path]:
            stale.append(path)
    messages = []
    for path in stale:
        name = _relative(path, root)
        what = "is missing" if not path.exists() else "is out of date"
        messages.append(f"{name} {what}: regenerate with `{REGENERATE}`")
    return messages


def write(statecharts_dir: Path, docs_dir: Path) -> list[Path]:
    """Generate every file and write those whose content changed; returns the paths written.

    Raises:
        ConfigurationError: Graphviz ``dot`` is not installed.
    """
    written = []
    for path, text in generate(statecharts_dir, docs_dir).items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return str(path.as_posix())
