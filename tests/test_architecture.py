"""The layout is the architecture: what may import what (docs/architecture.md), checked on the
source so a shortcut fails here rather than in review; and the other house rules the layout
implies (no order-type branch outside engine/orders/, one exception tree)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import kci_engine
import pytest
from kci_engine.errors import EngineError

ENGINE = Path(kci_engine.__file__).resolve().parent

_BELOW_TOOLING = {"errors", "core", "orders", "store", "delivery", "_facade", "_net", "history"}
#: Each part of the package and the parts it may import (itself always).
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "_net": set(),
    "core": {"errors"},
    "orders": {"errors", "core"},
    "store": {"errors", "core"},
    "delivery": {"errors", "core", "store", "_net"},
    "_facade": {"errors", "core", "orders", "store"},
    "history": {"errors", "core", "orders", "store"},
    "__init__": {"errors", "core", "orders", "store", "_facade"},
    "inbound": {"errors", "core", "orders", "store", "_facade", "_net"},
    "tooling": _BELOW_TOOLING | {"__init__", "inbound"},
    "cli": _BELOW_TOOLING | {"tooling", "inbound"},
    "_launch": {"cli"},
}


def _part(module: str) -> str:
    """``core`` for ``kci_engine.core._lifecycle``; ``__init__`` for ``kci_engine`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        relative = path.relative_to(ENGINE).with_suffix("")
        parts = ["kci_engine", *relative.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "migrations" in parts:
            continue  # Alembic loads these by path; they import no part of the package
        found.append((".".join(parts), path))
    return found


def _imports(module: str, path: Path) -> set[str]:
    """The package modules ``module`` imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("kci_engine"):
                out.add(target)
                if node.module is None:  # "from .. import x": x may be a module
                    out.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("kci_engine"))
    return out


MODULES = _modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_each_part_imports_only_what_the_architecture_allows(module: str, path: Path) -> None:
    part = _part(module)
    allowed = MAY_IMPORT[part] | {part}
    wrong = sorted(i for i in _imports(module, path) if _part(i) not in allowed)
    assert not wrong, f"{module} ({part}) imports {wrong}; {part} may import {sorted(allowed)}"


def test_every_part_of_the_package_has_a_rule() -> None:
    assert {_part(m) for m, _ in MODULES} <= set(MAY_IMPORT)


def test_no_order_type_branch_outside_the_order_type_specs() -> None:
    branch = re.compile(r"order_type\s+(is|==|is not|!=)\s|\bis\s+OrderType\.|==\s*OrderType\.")
    offenders = [
        f"{path.relative_to(ENGINE)}:{number}: {line.strip()}"
        for _, path in MODULES
        if "orders" not in path.relative_to(ENGINE).parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if branch.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_every_exception_class_in_the_package_is_an_engine_error() -> None:
    found = []
    for info in pkgutil.walk_packages(kci_engine.__path__, "kci_engine."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == info.name and issubclass(obj, BaseException):
                found.append(obj)
                assert issubclass(obj, EngineError), f"{info.name}.{obj.__name__}"
    assert len(found) >= 15
    assert {cls.__module__ for cls in found} == {"kci_engine.errors"}
