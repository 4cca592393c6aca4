"""The documentation site builds with ``mkdocs build --strict`` and shows the statecharts."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module's tests."""
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is required in CI: install the dev extras")
        pytest.skip("mkdocs is not installed")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "WARNING" not in build.stderr, build.stderr
    return out


def test_site_builds_strict_and_publishes_every_committed_statechart(site: Path) -> None:
    for chart in sorted((ROOT / "statecharts").glob("*.svg")):
        assert (site / "statecharts" / chart.name).read_bytes() == chart.read_bytes()


def test_lifecycles_page_embeds_the_provide_statechart_full_width(site: Path) -> None:
    page = (site / "lifecycles" / "index.html").read_text(encoding="utf-8")
    figure = re.search(r'<figure class="statechart">(.*?)</figure>', page, re.DOTALL)
    assert figure is not None, "no statechart figure on the lifecycles page"
    img = re.search(r'<img [^>]*src="([^"]+)"', figure.group(1))
    assert img is not None
    assert img.group(1) == "../statecharts/provide.svg"
    embedded = (site / "lifecycles" / img.group(1)).resolve()
    assert embedded.read_bytes() == (ROOT / "statecharts" / "provide.svg").read_bytes()


def test_api_reference_renders_the_public_surface(site: Path) -> None:
    import kci_engine as engine

    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in engine.__all__ if f'id="kci_engine.{name}"' not in page]
    assert missing == []
    assert 'id="kci_engine.store.sql.SqlStore.joined"' in page
    assert ":class:`" not in page  # Sphinx roles are rewritten by docs/hooks.py
