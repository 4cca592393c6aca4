"""The code in README.md and docs/*.md runs: every ```python block, in order, per file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(path.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc:{path.name}"}
    for number, block in enumerate(blocks, 1):
        # dont_inherit: this test module's `from __future__` must not change the examples.
        code = compile(block, f"{path.relative_to(ROOT)} block {number}", "exec", dont_inherit=True)
        exec(code, namespace)


def test_readme_gives_exactly_the_two_newcomer_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    shell = re.findall(r"^```sh\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert [block.strip() for block in shell] == [
        "bash tools/dev.sh demo",
        "bash tools/dev.sh test",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash tools/dev.sh test" in ci
