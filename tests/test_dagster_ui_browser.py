"""The Dagster UI in a real browser, operated as a user would: ``dagster-webserver`` and
``dagster-daemon`` on a loopback port over a scratch instance (SQLite, the repository's
dagster.yaml) and data directory, driven by headless Chromium (Playwright with Debian's
``chromium``, which ``.ci/run`` installs; without it the test skips, under ``CI`` it fails).

It opens the asset lineage, materialises one partition of ``grid_cells`` through the
Materialize dialog, launches a two-partition backfill from the same dialog, waits (through the
GraphQL API) until the daemon has run both, and writes screenshots: ``ui-materialize.png``,
``ui-backfill.png``, ``ui-lineage.png`` (the whole graph) and ``ui-asset.png`` (grid_cells up
close); ``ENTROPICE_SCREENSHOTS`` says where to (those in docs/images come from this test).
The water mask that ``grid_cells`` reads is materialised before the servers start, so the
dialog has nothing to warn about.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dagster_stack import REPO, DagsterStack, dagster_stack

#: Generous limits (ms): the UI's first queries wait for the code location.
LOAD_MS = 180_000
#: One partition from the dialog, then a backfill of two more.
SINGLE, BACKFILL = "h3_3", ("h3_4", "h3_5")
#: Browser storage that a returning user has: the newsletter prompt answered, the navigation
#: folded (more room for the graph).
INIT_SCRIPT = """
window.localStorage.setItem('communityNux', JSON.stringify('1'));
window.localStorage.setItem('dagster-nav-collapsed', 'true');
"""


def materialise_watermask(home: Path, data_dir: Path) -> None:
    """The unpartitioned upstream of grid_cells, stored in the scratch instance."""
    import dagster as dg

    from entropice_dagster.assets import all_assets
    from tests.conftest import dagster_resources

    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            all_assets,
            selection=["watermask"],
            instance=instance,
            resources=dagster_resources(data_dir),
        )
    assert result.success


@pytest.fixture(scope="module")
def stack(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterStack]:
    root = tmp_path_factory.mktemp("ui-stack")
    with dagster_stack(root, REPO / "dagster.yaml", setup=materialise_watermask) as running:
        yield running


def materialize_dialog(page):
    """The Materialize dialog of grid_cells (the partition list is a dialog too)."""
    return page.get_by_role("dialog").filter(has_text="Launch runs to materialize grid_cells")


def choose_partitions(page, keys: tuple[str, ...]) -> None:
    """In the open Materialize dialog: pick ``keys`` from the partition selector."""
    dialog = materialize_dialog(page)
    dialog.get_by_text("Select a partition or create one").click()
    for key in keys:
        page.get_by_placeholder("Filter partitions").fill(key)
        # the list is a popover at the end of the page: its item comes after any tag
        page.locator(f'[title="{key}"]').last.click()
    page.keyboard.press("Escape")  # closes the selector, keeps the dialog
    page.get_by_placeholder("Filter partitions").wait_for(state="detached")
    dialog.get_by_text(f"{len(keys)} partition").first.wait_for()


@pytest.mark.slow  # two servers, a browser and three runs
def test_materialise_and_backfill_from_the_ui(stack: DagsterStack, chromium: str, tmp_path):
    from playwright.sync_api import sync_playwright

    out = Path(os.environ.get("ENTROPICE_SCREENSHOTS", tmp_path / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1200})
            page.set_default_timeout(LOAD_MS)
            page.add_init_script(INIT_SCRIPT)

            # the lineage, every group expanded (the graph's shortcut), then the asset
            page.goto(f"{stack.url}/asset-groups")
            page.get_by_role("button", name="Materialize all").wait_for()
            page.keyboard.press("Alt+e")
            page.get_by_text("grid_cells", exact=True).last.click()

            # one partition through the Materialize dialog
            page.get_by_role("button", name="Materialize selected").click()
            materialize_dialog(page).wait_for()
            choose_partitions(page, (SINGLE,))
            page.screenshot(path=str(out / "ui-materialize.png"))
            page.get_by_role("button", name="Launch 1 run").click()
            materialize_dialog(page).wait_for(state="detached")
            (run,) = stack.wait_for_runs(lambda run: run["partition"] == SINGLE, 1)

            # two partitions: the same dialog launches a backfill, which the daemon runs
            page.get_by_role("button", name="Materialize selected").click()
            choose_partitions(page, BACKFILL)
            page.get_by_role("button", name="Launch backfill").click()
            materialize_dialog(page).wait_for(state="detached")
            (backfill,) = stack.wait_for("the backfill", stack.backfills)
            assert sorted(backfill["partitionNames"]) == sorted(BACKFILL)
            backfill_runs = stack.wait_for_backfill(backfill["id"])

            # the backfill's runs, then the lineage with the materialised assets
            page.set_viewport_size({"width": 1800, "height": 700})
            page.goto(f"{stack.url}/runs/b/{backfill['id']}?tab=runs")
            page.get_by_text("Success", exact=True).nth(len(backfill_runs) - 1).wait_for()
            page.screenshot(path=str(out / "ui-backfill.png"))

            page.set_viewport_size({"width": 1800, "height": 1200})
            page.goto(f"{stack.url}/asset-groups")
            page.get_by_role("button", name="Materialize all").wait_for()
            page.locator("button:has([aria-label=panel_show_right])").first.click()
            page.locator("button:has([aria-label=zoom_out])").first.click()
            page.locator("button:has([aria-label=zoom_out])").first.click()
            page.mouse.move(1500, 600)  # pan the graph's top into view
            page.mouse.down()
            page.mouse.move(1600, 660, steps=8)
            page.mouse.up()
            page.wait_for_timeout(1_000)
            page.screenshot(path=str(out / "ui-lineage.png"))

            # closer: the grid stage's nodes (checks, partitions filled) and the asset's panel
            page.goto(f"{stack.url}/asset-groups/grid_cells")  # selected and centred
            page.get_by_role("button", name="Materialize selected").wait_for()
            for _ in range(5):
                page.locator("button:has([aria-label=zoom_in])").first.click()
            page.get_by_text("33% filled").wait_for()  # 3 of the 9 grid levels
            page.wait_for_timeout(1_000)
            page.screenshot(path=str(out / "ui-asset.png"))
        finally:
            browser.close()

    partitions = stack.materialised_partitions("grid_cells")
    assert set(partitions) == {SINGLE, *BACKFILL}
    assert partitions[SINGLE] == run["runId"]
    for key in (SINGLE, *BACKFILL):
        assert (stack.data_dir / "grids" / f"{key}.parquet").is_file()
    for name in ("ui-lineage", "ui-materialize", "ui-backfill", "ui-asset"):
        assert (out / f"{name}.png").stat().st_size > 10_000  # a drawn page, not a blank one
