"""Arctic-wide grid cells with land areas: Entropice vs a per-cell script.

Builds every cell north of 50 N for h3_6 and healpix_10 (about 1.7 M and 1.5 M cells) with
valid antimeridian/pole geometries, WGS84 land areas and land fractions from the watermask, and
compares the throughput with what one would otherwise write: a loop over cells building shapely
polygons, ``pyproj.Geod`` areas and ``global_land_mask.is_land`` on the 49 (H3 res+2) or 64
(HEALPix level+3) child-cell centres. The baseline runs on a subset and is reported per cell.

Run: ``.venv/bin/python benchmarks/grids.py [--lat 50] [--baseline-cells 20000]``
"""

from __future__ import annotations

import argparse
import time

import h3
import healpix_geo.nested as healpix
import numpy as np
import pyproj
import shapely
from global_land_mask import globe
from rich.console import Console
from rich.table import Table

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.spatial.grids import cell_ids, grid_cells
from entropice_core.spatial.watermask import water_polygons


def per_cell_script(spec: GridSpec, ids: np.ndarray) -> float:
    """The straightforward loop a user would write; returns the total land area (km2)."""
    geod = pyproj.Geod(ellps="WGS84")
    total = 0.0
    for cell in ids:
        if spec.grid == "h3":
            latlng = np.array(h3.cell_to_boundary(h3.int_to_str(int(cell))))
            lon, lat = latlng[:, 1], latlng[:, 0]
            children = [
                h3.cell_to_latlng(c)
                for c in h3.cell_to_children(h3.int_to_str(int(cell)), spec.level + 2)
            ]
            clat, clon = np.array(children).T
        else:
            lon, lat = healpix.vertices(np.array([cell], np.uint64), spec.level, step=2)
            lon, lat = (lon[0] + 180) % 360 - 180, lat[0]
            kids = np.arange(int(cell) * 64, int(cell) * 64 + 64, dtype=np.uint64)
            clon, clat = healpix.healpix_to_lonlat(kids, spec.level + 3)
            clon = (clon + 180) % 360 - 180
        polygon = shapely.Polygon(np.column_stack([lon, lat]))
        area = abs(geod.geometry_area_perimeter(polygon)[0]) / 1e6
        total += area * globe.is_land(clat, clon).mean()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lat", type=float, default=50.0, help="southern limit (degrees N)")
    parser.add_argument("--baseline-cells", type=int, default=20000, help="cells the loop runs on")
    args = parser.parse_args()
    console = Console(width=130)
    aoi = AreaOfInterest.north_of(args.lat)

    start = time.perf_counter()
    water = water_polygons(aoi)
    watermask_s = time.perf_counter() - start
    console.print(f"watermask north of {args.lat:g} N: {len(water)} tiles in {watermask_s:.1f} s")

    table = Table(title=f"Grid cells north of {args.lat:g} N with land areas (2-core CPU)")
    for column in ("grid level", "method", "cells", "seconds", "cells/s", "speed-up"):
        table.add_column(column, justify="right")
    for key in ("h3_6", "healpix_10"):
        spec = GridSpec.from_key(key)
        start = time.perf_counter()
        cells = grid_cells(spec, aoi, water)
        ours_s = time.perf_counter() - start
        every = cell_ids(spec, aoi)
        n_all = len(every)
        ours_rate = n_all / ours_s

        subset = every[:: max(1, n_all // args.baseline_cells)]
        start = time.perf_counter()
        per_cell_script(spec, subset)
        loop_s = time.perf_counter() - start
        loop_rate = len(subset) / loop_s
        table.add_row(
            key,
            "entropice grid_cells",
            f"{n_all:,} ({len(cells):,} land)",
            f"{ours_s:.1f}",
            f"{ours_rate:,.0f}",
            f"{ours_rate / loop_rate:.1f}x",
        )
        table.add_row(
            key,
            "per-cell loop (subset)",
            f"{len(subset):,}",
            f"{loop_s:.1f}",
            f"{loop_rate:,.0f}",
            "1.0x",
        )
        table.add_row(
            key,
            "per-cell loop (all, extrapolated)",
            f"{n_all:,}",
            f"{n_all / loop_rate:.0f}",
            f"{loop_rate:,.0f}",
            "",
        )
    console.print(table)


if __name__ == "__main__":
    main()
