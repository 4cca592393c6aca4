"""The documentation site builds with ``mkdocs build --strict`` and shows the statecharts."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


# --- The pages in a real browser ----------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
#: The flags a headless Chromium needs here: no sandbox as root, and nothing reaching outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A laptop's width, the one the reviewer's 1,400 px report was made at.
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def browser_page(site: Path) -> Iterator[Any]:
    """A headless Chromium page, and the site served on loopback."""
    missing = importlib.util.find_spec("playwright") is None or not Path(CHROMIUM).exists()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(
                "Chromium and playwright are required in CI: bash tools/dev.sh installs them"
            )
        pytest.skip("Chromium or playwright is not installed")
    from playwright.sync_api import sync_playwright

    handler = partial(SimpleHTTPRequestHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.base_url = f"http://127.0.0.1:{server.server_address[1]}/"  # type: ignore[attr-defined]
        yield page
        browser.close()
    server.shutdown()
    server.server_close()


#: Per wide table on a page: how much it overflows its box (scrolls sideways), and how many
#: identifiers (code spans) are broken across lines.
_TABLE_FIT = """
() => [...document.querySelectorAll('.md-typeset__table')].map(box => ({
    overflow: box.scrollWidth - box.clientWidth,
    broken: [...box.querySelectorAll('code')]
        .filter(code => code.getClientRects().length > 1)
        .map(code => code.textContent),
}))
"""


@pytest.mark.parametrize("path", ["reason-code-matrix/", "contract/"])
def test_wide_tables_fit_the_page_without_breaking_identifiers(
    browser_page: Any, path: str
) -> None:
    browser_page.goto(browser_page.base_url + path)
    tables = browser_page.evaluate(_TABLE_FIT)
    assert tables, f"no tables on {path}"
    for number, table in enumerate(tables):
        assert table["overflow"] <= 1, f"{path} table {number} is clipped by {table['overflow']} px"
        assert table["broken"] == [], f"{path} table {number} breaks {table['broken'][:5]}"


def test_the_lifecycles_page_keeps_the_navigation_and_fits_its_charts(browser_page: Any) -> None:
    browser_page.goto(browser_page.base_url + "lifecycles/")
    navigation = browser_page.locator(".md-sidebar--primary")
    assert navigation.is_visible()
    box = navigation.bounding_box()
    assert box is not None
    assert box["width"] > 100
    widths = browser_page.evaluate(
        "() => [...document.querySelectorAll('.statechart img')].map(img => "
        "[img.getBoundingClientRect().right, document.documentElement.clientWidth])"
    )
    assert len(widths) == 4
    assert all(right <= page_width for right, page_width in widths), widths
