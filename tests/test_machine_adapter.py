"""The adapter to ``transitions``: its speed-ups stand in for upstream methods, and this test fails
loudly, naming the method, when a ``transitions`` release changes one of them or the behaviour the
engine relies on (the order of callbacks, conditions tried in order, internal transitions)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

import pytest
import transitions
from kci_engine.core import _machine
from transitions import Machine as StockMachine

#: The source of each upstream method the adapter stands in for, as reviewed (transitions 0.9.2
#: and 0.9.3 have the same). A new hash means: read the new upstream code, check the adapter
#: still does the same, then add the hash here.
REVIEWED: dict[str, set[str]] = {
    "transitions.core.State.enter": {"f958fc2a58903fea"},
    "transitions.core.State.exit": {"7108c280f25ef0cd"},
    "transitions.core.Transition.execute": {"2225f965ea3ebc15"},
    "transitions.core.Transition._change_state": {"0b6bc5ccb4f7fe9d"},
    "transitions.core.Event.trigger": {"b911622c72e692aa"},
    "transitions.core.Event._trigger": {"cf5b1392cd80d8ef"},
    "transitions.core.Event._process": {"a5f7d766fbff30ba"},
    "transitions.core.Machine.callbacks": {"412ca812ca6137df"},
}


def _source_hash(path: str) -> str:
    module, cls, method = path.rsplit(".", 2)
    obj = getattr(getattr(importlib.import_module(module), cls), method)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def test_every_overridden_method_is_listed_for_review() -> None:
    assert set(_machine.OVERRIDDEN) == set(REVIEWED)


@pytest.mark.parametrize("path", sorted(REVIEWED))
def test_the_upstream_method_is_the_one_the_adapter_was_reviewed_against(path: str) -> None:
    found = _source_hash(path)
    assert found in REVIEWED[path], (
        f"transitions {transitions.__version__} changed {path} (source hash {found}): review "
        "engine/core/_machine.py against it before adding the hash to REVIEWED"
    )


def test_the_pinned_range_is_the_one_declared() -> None:
    major, minor, *_ = (int(part) for part in transitions.__version__.split(".")[:3])
    assert (major, minor) == (0, 9), transitions.__version__


class _Trace:
    """A model and callbacks that record what runs, in order."""

    def __init__(self) -> None:
        self.state = "A"
        self.status = "A"
        self.calls: list[str] = []

    def log(self, name: str) -> Any:
        def callback(event_data: Any) -> Any:
            self.calls.append(name)
            return name != "refuse"

        return callback


def _build(cls: type[StockMachine], trace: _Trace, attribute: str) -> StockMachine:
    machine = cls(
        model=None,
        states=["A", "B", "C"],
        initial="A",
        auto_transitions=False,
        send_event=True,
        model_attribute=attribute,
    )
    machine.get_state("B").on_enter.append(trace.log("enter B"))
    machine.get_state("A").on_exit.append(trace.log("exit A"))
    machine.add_transition(
        "go", "A", "B", conditions=[trace.log("refuse")], before=[trace.log("skipped")]
    )
    machine.add_transition(
        "go",
        "A",
        "B",
        prepare=[trace.log("prepare")],
        conditions=[trace.log("condition")],
        before=[trace.log("before")],
        after=[trace.log("after")],
    )
    machine.add_transition("note", "B", None, before=[trace.log("internal")])
    machine.add_transition("end", "B", "C", before=[trace.log("end")])
    return machine


def test_the_adapter_runs_callbacks_as_stock_transitions_does() -> None:
    """Same events, same chart, same model: the same callbacks, in the same order, the same
    results and the same states."""
    runs = []
    for cls, attribute in ((StockMachine, "state"), (_machine._QuietMachine, "status")):
        trace = _Trace()
        machine = _build(cls, trace, attribute)
        results = [
            machine.events[name].trigger(trace)
            for name in ("go", "note", "end")
            if name in machine.events
        ]
        runs.append((results, trace.calls, getattr(trace, attribute)))
    assert runs[0] == runs[1]
    assert runs[1][2] == "C"
    assert runs[1][1] == [
        "refuse",
        "prepare",
        "condition",
        "before",
        "exit A",
        "enter B",
        "after",
        "internal",
        "end",
    ]
