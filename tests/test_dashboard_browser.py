"""The dashboard in a real browser: ``streamlit run`` on a loopback port against the end-to-end
run's outputs, driven by headless Chromium (Playwright with Debian's ``chromium``; Playwright
cannot download its own browser here). Every page loads, draws its Bokeh plots, shows no
exception element, and a screenshot is written (``ENTROPICE_SCREENSHOTS``: where to; the
screenshots in docs/dashboard.md come from this test).

No wall-clock asserts: the waits are generous (the machine may be shared), and a page counts
as loaded once Streamlit's running indicator has stayed away for several polls in a row.
"""

from __future__ import annotations

import os
from pathlib import Path

from entropice_dashboard import PAGES, page_url
from entropice_dashboard.serve import serve

REPO = Path(__file__).resolve().parents[1]
#: Generous limits (ms): the first page imports the scientific stack and reads the model.
LOAD_MS = 180_000
#: The running indicator must stay away this long (ms), polled every QUIET_POLL_MS.
QUIET_MS = 1_500
QUIET_POLL_MS = 250
#: Query parameters per page: an experiment at the H3 level with a difference map.
QUERY = {
    "training-data": {"grid_level": "h3_5"},
    "training-analysis": {"grid_level": "h3_5", "experiment": "xgboost-binary"},
    "model-state": {"grid_level": "h3_5", "experiment": "espa-binary"},
    "inference": {"grid_level": "h3_5", "experiment": "xgboost-binary"},
}
#: Bokeh figures each page draws at least.
PLOTS = {
    "overview": 1,
    "training-data": 4,
    "training-analysis": 2,
    "model-state": 5,
    "inference": 2,
}
#: A heading each page shows.
HEADINGS = {
    "overview": "Leaderboard",
    "training-data": "Spatial split",
    "training-analysis": "Search results of one experiment",
    "model-state": "Decision boundary",
    "inference": "Difference between two experiments",
}


def wait_quiet(page) -> None:
    """Wait until the script run is over: the running indicator absent QUIET_MS in a row."""
    quiet = 0
    waited = 0
    while quiet < QUIET_MS:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        quiet = 0 if running else quiet + QUIET_POLL_MS
        page.wait_for_timeout(QUIET_POLL_MS)
        waited += QUIET_POLL_MS
        if waited > LOAD_MS:
            raise TimeoutError("the page kept running")


def check_pages(base: str, out: Path, chromium: str) -> dict[str, Path]:
    """Open every page in headless Chromium; return the screenshots written."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 3400})
            page.set_default_timeout(LOAD_MS)
            for slug in PAGES:
                page.goto(page_url(slug, base, **QUERY.get(slug, {})))
                page.wait_for_selector('[data-testid="stSidebarNav"]')
                page.get_by_text(HEADINGS[slug], exact=True).first.wait_for()
                wait_quiet(page)
                # every Bokeh figure drawn: one canvas per plot at least
                page.wait_for_function(
                    "n => document.querySelectorAll('.stBokehContainer').length >= n",
                    arg=PLOTS[slug],
                )
                containers = page.locator(".stBokehContainer")
                for i in range(containers.count()):
                    containers.nth(i).locator("canvas").first.wait_for(state="attached")
                wait_quiet(page)
                assert page.locator('[data-testid="stException"]').count() == 0, slug
                shots[slug] = out / f"dashboard-{slug}.png"
                page.screenshot(path=str(shots[slug]), full_page=True)
        finally:
            browser.close()
    return shots


def test_every_page_in_chromium(sample_graph, chromium, tmp_path):
    out = Path(os.environ.get("ENTROPICE_SCREENSHOTS", tmp_path / "screenshots"))
    with serve(sample_graph.data_dir, tmp_path / "streamlit.log") as (base, _):
        shots = check_pages(base, out, chromium)
    assert set(shots) == set(PAGES)
    for path in shots.values():
        assert path.stat().st_size > 10_000  # a drawn page, not a blank one
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()
