"""What a supplier's backend gets from a bare ``pip install kci-engine``: the engine, the SQLite
outbox and the delivery client, and no web server, CLI framework, YAML or PostgreSQL driver; its
pytest keeps working. Installed into a fresh virtualenv, offline, from the wheels
``tools/dev.sh`` collected when it set up ``.venv``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
NOT_IN_A_BARE_INSTALL = {"starlette", "uvicorn", "click", "pyyaml", "psycopg", "playwright"}

SMOKE = """\
import kci_engine
from kci_engine import Engine, Event
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

assert kci_engine.__version__
with SqlStore("sqlite:///bare.db") as store:
    engine = Engine(store)
    order_id = engine.accept_order("provide", provide_order(7))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S-7"}})
    [kci] = engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
    assert kci.sequence_number == 2 and kci.body["reasonCode"] == "COMMITTED"
print("bare install ok", kci_engine.__version__)
"""


def test_the_wheel_lists_every_package_of_the_source() -> None:
    """setuptools ships only the packages pyproject.toml lists: a folder of modules left out
    (the command and the Supplier API once were) is missing from every install."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    source = ROOT / "engine"
    folders = {
        ".".join(["kci_engine", *path.parent.relative_to(source).parts])
        for path in source.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert folders == listed


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with ``pip install kci-engine`` (no extras) and pytest, offline."""
    if not WHEELHOUSE.is_dir():
        if os.environ.get("CI"):
            pytest.fail("no .venv/wheelhouse: bash tools/dev.sh collects it when it sets up")
        pytest.skip("no .venv/wheelhouse (set up with bash tools/dev.sh)")
    tmp = tmp_path_factory.mktemp("bare")
    build = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", str(tmp / "dist"), str(ROOT), cwd=tmp,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    made = _run(sys.executable, "-m", "venv", str(tmp / "venv"), cwd=tmp)
    assert made.returncode == 0, made.stderr
    python = tmp / "venv" / "bin" / "python"
    install = _run(
        str(python), "-m", "pip", "install", "--no-index", "--find-links", str(tmp / "dist"),
        "--find-links", str(WHEELHOUSE), "kci-engine", "pytest", cwd=tmp,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def test_a_bare_install_runs_the_engine_on_sqlite(bare: Path, tmp_path: Path) -> None:
    (tmp_path / "smoke.py").write_text(SMOKE)
    run = _run(str(bare), "smoke.py", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "bare install ok" in run.stdout


def test_a_bare_install_has_no_web_server_cli_yaml_or_postgres_driver(bare: Path) -> None:
    listed = _run(str(bare), "-m", "pip", "list", "--format=freeze", cwd=bare.parent)
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "kci-engine" in installed
    assert {"transitions", "pydantic", "sqlmodel", "sqlalchemy", "httpx"} <= installed
    assert not installed & NOT_IN_A_BARE_INSTALL


def test_the_command_says_which_extra_it_needs(bare: Path) -> None:
    run = _run(str(bare.parent / "kci-engine"), "--help", cwd=bare.parent)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "Error: the kci-engine command needs the cli extra: pip install 'kci-engine[cli]'"
    )


def test_pytest_keeps_working_and_a_scenario_file_names_the_missing_extra(
    bare: Path, tmp_path: Path
) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    plain = _run(str(bare), "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "1 passed" in plain.stdout
    scenario = textwrap.dedent(
        """\
        title: One order
        order_type: provide
        order: {id: 1, tenant: T}
        steps: []
        """
    )
    (tmp_path / "one.kci.yaml").write_text(scenario)
    run = _run(str(bare), "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert "needs the scenarios extra: pip install 'kci-engine[scenarios]'" in run.stdout
