"""RTS labels: Entropice vs plain ``geopandas.overlay``/``sjoin`` + groupby, same inputs.

100,000 random footprints (20 m - 2 km radius, 2018-2023) over a 1,200 x 1,000 km box of the
western Canadian Arctic, labelled onto h3_6 and healpix_10 cells. The footprints carry
``area_m2`` as the ``darts_polygons`` asset stores them (computed once at ingest). Both sides
compute the exact intersection area per cell and year in EPSG:6931 and the count of footprints
per cell; the table reports both times, the ratio and the largest difference in area.

Run: ``.venv/bin/python benchmarks/labels.py [--footprints 100000]``
"""

from __future__ import annotations

import argparse
import time

import dask.array  # noqa: F401  (imported up front: xarray loads it lazily on first use)
import geopandas as gpd
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.ingest.darts import rts_labels
from entropice_core.io.zarr import dataset_table
from entropice_core.spatial.grids import grid_cells
from entropice_core.spatial.overlay import overlay_cells
from entropice_core.spatial.watermask import water_polygons

BBOX = (-140.0, 64.0, -115.0, 72.0)


def random_footprints(n: int, seed: int = 0) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    lon = rng.uniform(BBOX[0] + 0.5, BBOX[2] - 0.5, n)
    lat = rng.uniform(BBOX[1] + 0.3, BBOX[3] - 0.3, n)
    centres = gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs=4326).to_crs("EPSG:6931")
    radius = np.minimum(rng.lognormal(np.log(30), 0.9, n), 2000)
    footprints = gpd.GeoDataFrame(
        {"year": rng.integers(2018, 2024, n).astype(np.int16), "source": "benchmark"},
        geometry=centres.buffer(radius, quad_segs=4).to_crs(4326),
        crs="EPSG:4326",
    )
    # The darts_polygons schema: read_footprints stores each footprint's EPSG:6931 area.
    footprints["area_m2"] = footprints.to_crs("EPSG:6931").area
    return footprints


def geopandas_overlay(footprints: gpd.GeoDataFrame, cells: gpd.GeoDataFrame) -> pd.DataFrame:
    """What a user would write: overlay + groupby for areas, sjoin + groupby for counts."""
    projected = cells[["cell_id", "geometry"]].copy()
    projected["geometry"] = projected.geometry.segmentize(0.01)
    pieces = gpd.overlay(
        footprints.to_crs("EPSG:6931"), projected.to_crs("EPSG:6931"), how="intersection"
    )
    pieces["area_km2"] = pieces.area / 1e6
    area = pieces.groupby(["cell_id", "year"]).area_km2.sum()
    points = footprints.set_geometry(footprints.representative_point())
    owners = gpd.sjoin(points, cells[["cell_id", "geometry"]], predicate="intersects")
    count = owners.groupby(["cell_id", "year"]).size().rename("rts_count")
    return pd.concat([area, count], axis=1).fillna(0)


def areas_and_counts(footprints: gpd.GeoDataFrame, cells: gpd.GeoDataFrame) -> pd.DataFrame:
    """The baseline's result computed with entropice's overlay."""
    overlay = overlay_cells(
        footprints.geometry.reset_index(drop=True),
        cells.geometry.reset_index(drop=True),
        areas_km2=footprints["area_m2"].to_numpy() / 1e6,
    )
    cell_id = cells["cell_id"].to_numpy()
    year = footprints["year"].to_numpy()
    area = pd.Series(
        overlay.area_km2,
        index=pd.MultiIndex.from_arrays(
            [cell_id[overlay.cell], year[overlay.polygon]], names=["cell_id", "year"]
        ),
    )
    inside = overlay.owner >= 0
    count = pd.Series(
        1,
        index=pd.MultiIndex.from_arrays(
            [cell_id[overlay.owner[inside]], year[inside]], names=["cell_id", "year"]
        ),
    )
    return pd.concat(
        [
            area.groupby(level=[0, 1]).sum().rename("area_km2"),
            count.groupby(level=[0, 1]).sum().rename("rts_count"),
        ],
        axis=1,
    ).fillna(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--footprints", type=int, default=100_000)
    args = parser.parse_args()
    console = Console(width=130)
    aoi = AreaOfInterest.from_bbox(BBOX)
    water = water_polygons(aoi)
    footprints = random_footprints(args.footprints)

    table = Table(title=f"Labelling {args.footprints:,} footprints (2-core CPU), seconds")
    columns = (
        "grid level",
        "cells",
        "geopandas overlay+sjoin",
        "entropice overlay_cells",
        "speed-up",
        "entropice rts_labels (all)",
        "max |diff| km2",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for key in ("h3_6", "healpix_10"):
        spec = GridSpec.from_key(key)
        cells = grid_cells(spec, aoi, water)
        start = time.perf_counter()
        reference = geopandas_overlay(footprints, cells)
        overlay_s = time.perf_counter() - start
        start = time.perf_counter()
        same_work = areas_and_counts(footprints, cells)
        same_s = time.perf_counter() - start
        start = time.perf_counter()
        labels = rts_labels(footprints, cells, spec)
        labels_s = time.perf_counter() - start

        ours = dataset_table(labels).set_index(["cell_id", "year"])
        ours = ours.loc[(ours.rts_area_km2 > 0) | (ours.rts_count > 0)]
        joined = ours.join(reference.add_suffix("_ref"), how="outer").fillna(0)
        assert (joined.rts_count == joined.rts_count_ref).all(), "counts differ"
        pd.testing.assert_frame_equal(same_work, reference, check_exact=False, rtol=1e-9)
        table.add_row(
            key,
            f"{len(cells):,}",
            f"{overlay_s:.2f}",
            f"{same_s:.2f}",
            f"{overlay_s / same_s:.1f}x",
            f"{labels_s:.2f} ({overlay_s / labels_s:.1f}x)",
            f"{(joined.rts_area_km2 - joined.area_km2_ref).abs().max():.1e}",
        )
    console.print(table)
    console.print(
        "Same work, identical results (asserted): exact RTS area and the count of footprints "
        "whose representative point lies in each cell, per cell and year. rts_labels adds "
        "slump matching across years, the all-years aggregates and the xdggs dataset."
    )


if __name__ == "__main__":
    main()
