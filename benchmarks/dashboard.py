"""The Inference page on an Arctic-size prediction file (issue 16, point 4).

Writes a synthetic h3_6 ``predictions.parquet`` (GeoParquet, as the ``predictions`` asset
writes it) for every land cell north of 50 N (about 900,000 cells) under a temporary data
directory, serves the dashboard on a loopback port and opens the Inference page in headless
Chromium (Debian's ``chromium``). Measured: the seconds from the request until the map is drawn
(the caption says how many cells, Bokeh's canvas is in the page and Streamlit has stopped
running), cold and again with the server's cache warm, and the server's peak resident memory.
Goal: under 10 s and under 2 GB. The page draws coarser parents when the cells in view exceed
its polygon budget (30,000 by default), full cells when zoomed into a region.

    .venv/bin/python benchmarks/dashboard.py [--cells-only] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from entropice_core.config import GridSpec
from entropice_core.layout import Layout

GRID_LEVEL = "h3_6"
EXPERIMENT = "xgboost-binary"
CHROMIUM = "/usr/bin/chromium"


def arctic_cells(min_lat: float = 50.0) -> np.ndarray:
    """Every land h3_6 cell whose centre lies north of ``min_lat`` (global-land-mask)."""
    import h3
    from global_land_mask import globe
    from h3.api import numpy_int as h3_int

    coarse = [
        c
        for base in h3.get_res0_cells()
        for c in h3.cell_to_children(base, 2)
        if h3.cell_to_latlng(c)[0] > min_lat - 3.0
    ]
    ids = np.concatenate(
        [np.asarray(h3_int.cell_to_children(h3.str_to_int(c), 6), dtype=np.uint64) for c in coarse]
    )
    latlng = np.array([h3_int.cell_to_latlng(c) for c in ids.tolist()])
    keep = latlng[:, 0] >= min_lat
    ids, latlng = ids[keep], latlng[keep]
    land = globe.is_land(latlng[:, 0], latlng[:, 1])
    return np.sort(ids[land])


def write_predictions(data_dir: Path, ids: np.ndarray) -> Path:
    """A GeoParquet of predictions for ``ids`` and the experiment's stamp, as the assets do."""
    import geopandas as gpd
    import pandas as pd

    from entropice_core.io.geoparquet import write_geoparquet
    from entropice_core.spatial.grids import cell_rings, rings_to_polygons

    layout = Layout(data_dir)
    rng = np.random.default_rng(0)
    geometry = np.empty(len(ids), dtype=object)
    for positions, lon, lat in cell_rings(GridSpec.from_key(GRID_LEVEL), ids):
        geometry[positions] = rings_to_polygons(lon, lat)
    p_rts = rng.beta(1.0, 3.0, len(ids)).astype(np.float32)
    predicted = (p_rts > 0.5).astype(int)
    frame = gpd.GeoDataFrame(
        {
            "cell_id": ids,
            "role": pd.Series(["unlabelled"] * len(ids), dtype="string"),
            "predicted_class": pd.array(predicted, dtype="Int64"),
            "predicted_label": pd.Series(np.where(predicted, "rts", "no_rts"), dtype="string"),
            "proba_no_rts": 1 - p_rts,
            "proba_rts": p_rts,
        },
        geometry=geometry,
        crs="EPSG:4326",
    )
    path = layout.predictions(GRID_LEVEL, EXPERIMENT)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_geoparquet(frame, path)
    stamp = {"classes": ["no_rts", "rts"], "feature_names": [], "dataset": "all"}
    (path.parent / "model.json").write_text(json.dumps(stamp))
    return path


def time_map(base: str, runs: int = 2) -> list[float]:
    """Seconds until the Inference page has drawn its map, per load (the first one cold)."""
    from playwright.sync_api import sync_playwright

    from entropice_dashboard import page_url

    url = page_url("inference", base, grid_level=GRID_LEVEL, experiment=EXPERIMENT)
    seconds = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for _ in range(runs):
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                page.set_default_timeout(600_000)
                started = time.perf_counter()
                page.goto(url)
                page.get_by_text("cells mapped", exact=False).first.wait_for()
                page.locator(".stBokehContainer canvas").first.wait_for(state="attached")
                seconds.append(time.perf_counter() - started)
                page.close()
        finally:
            browser.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="write the data here and keep it")
    args = parser.parse_args()

    from entropice_dashboard.serve import peak_rss_mb, serve

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.keep or Path(tmp) / "data"
        started = time.perf_counter()
        ids = arctic_cells()
        path = write_predictions(data_dir, ids)
        print(
            f"synthetic {GRID_LEVEL} predictions: {len(ids):,} land cells north of 50 N, "
            f"{path.stat().st_size / 1e6:.0f} MB, written in {time.perf_counter() - started:.0f} s"
        )
        with serve(data_dir, Path(tmp) / "streamlit.log") as (base, process):
            cold, warm = time_map(base)
            peak = peak_rss_mb(process.pid)
        print("| load | s until the map is drawn | goal |")
        print("| --- | --- | --- |")
        print(f"| first (cold: read, coarsen, project) | {cold:.1f} | < 10 |")
        print(f"| again (server cache warm) | {warm:.1f} | < 10 |")
        print(f"server peak resident memory: {peak:,.0f} MiB (goal < 2,048)")


if __name__ == "__main__":
    main()
