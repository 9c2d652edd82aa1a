"""Raster-to-grid aggregation: this engine vs exactextract, xvec and a memory pass.

Builds one EPSG:3413 float32 raster at 32 m with 10 % nodata per size, the h3_6, h3_5 and
healpix_10 cells over it, and an ERA5-like case (0.25 degree, 50 N to the pole, 24 time steps,
h3_3; exactextract runs on the first time step, times 24). Each method computes mean, sum, std,
min, max, count and median (exactextract also without the median); the floor is one
``np.nansum`` over the raster.

Run: ``.venv/bin/python benchmarks/aggregation.py [--sizes 3000 6000] [--xvec]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import geopandas as gpd
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
import xvec  # noqa: F401  (registers the .xvec accessor)
from exactextract import exact_extract
from pyproj import Transformer
from rich.console import Console
from rich.table import Table

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.spatial.aggregators import AggregationConfig, aggregate_raster
from entropice_core.spatial.grids import grid_cells
from entropice_core.spatial.pixelmap import RasterGrid, build_cell_pixel_map, project_cells

NO_WATER = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)
STATS = ("mean", "sum", "std", "min", "max", "count", "valid_fraction", "median")
MOMENTS = ("mean", "sum", "std", "min", "max", "count", "valid_fraction")
EE_STATS = ["mean", "sum", "stdev", "min", "max", "count", "median"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def polar_raster(size: int, res: float = 32.0) -> xr.DataArray:
    cx, cy = Transformer.from_crs(4326, 3413, always_xy=True).transform(-134.0, 68.0)
    rng = np.random.default_rng(0)
    values = rng.normal(10, 3, size=(size, size)).astype(np.float32)
    values[rng.random((size, size)) < 0.1] = np.nan
    left, top = cx - size * res / 2, cy + size * res / 2
    coords = {"y": top - res * (np.arange(size) + 0.5), "x": left + res * (np.arange(size) + 0.5)}
    return xr.DataArray(values, dims=("y", "x"), coords=coords).rio.write_crs(3413)


def cells_over(raster: xr.DataArray, key: str) -> gpd.GeoDataFrame:
    west, south, east, north = raster.rio.transform_bounds(4326, densify_pts=50)
    aoi = AreaOfInterest.from_bbox((west, south, east, north))
    return grid_cells(GridSpec.from_key(key), aoi, NO_WATER)


def era5_raster(steps: int = 24) -> xr.DataArray:
    lat, lon = 90 - 0.25 * np.arange(161), 0.25 * np.arange(1440)
    rng = np.random.default_rng(1)
    values = rng.normal(270, 10, size=(steps, len(lat), len(lon))).astype(np.float32)
    coords = {"time": np.arange(steps), "y": lat, "x": lon}
    return xr.DataArray(values, dims=("time", "y", "x"), coords=coords).rio.write_crs(4326)


def run_case(table: Table, label: str, raster: xr.DataArray, key: str, with_xvec: bool) -> None:
    spec = GridSpec.from_key(key)
    cells = cells_over(raster, key) if key != "h3_3" else None
    if cells is None:
        cells = grid_cells(spec, AreaOfInterest.north_of(50.0), NO_WATER)
    grid = RasterGrid.from_xarray(raster)
    values = raster.values
    pixels = values.size
    floor = min(timed(lambda: np.nansum(values)) for _ in range(3))
    polygons = gpd.GeoDataFrame(geometry=project_cells(cells, grid), crs=grid.crs)

    every = AggregationConfig(statistics=STATS)
    moments = AggregationConfig(statistics=MOMENTS)
    results: list[tuple[str, float]] = []
    cell_map = None

    def first() -> None:
        nonlocal cell_map
        cell_map = build_cell_pixel_map(cells, grid)
        aggregate_raster(raster, cells, spec, every, cell_map=cell_map)

    results.append(("engine: mapping + all stats", timed(first)))
    results.append(
        (
            "engine: cached, all stats",
            timed(lambda: aggregate_raster(raster, cells, spec, every, cell_map=cell_map)),
        )
    )
    results.append(
        (
            "engine: cached, moments",
            timed(lambda: aggregate_raster(raster, cells, spec, moments, cell_map=cell_map)),
        )
    )
    # exactextract takes one band at a time: time the first and scale by the band count.
    bands = int(np.prod(raster.shape[:-2]))
    band = raster.isel({d: 0 for d in raster.dims[:-2]})
    ee_all = bands * timed(lambda: exact_extract(band, polygons, EE_STATS, output="pandas"))
    results.append(("exactextract: all stats", ee_all))
    no_median = EE_STATS[:-1]
    ee_moments = timed(lambda: exact_extract(band, polygons, no_median, output="pandas"))
    results.append(("exactextract: no median", bands * ee_moments))
    if with_xvec:
        stats = ["mean", "sum", "std", "min", "max", "count", "median"]
        geoms = polygons.geometry.to_numpy()
        try:
            seconds = timed(
                lambda: raster.xvec.zonal_stats(
                    geoms, "x", "y", stats=stats, method="rasterize", n_jobs=1
                )
            )
            results.append(("xvec rasterize", seconds))
        except Exception as err:  # report the failure, keep benchmarking
            table.add_row(label, key, "xvec rasterize", f"failed: {type(err).__name__}", "", "", "")
    results.append(("floor: np.nansum", floor))
    for method, seconds in results:
        table.add_row(
            label,
            f"{key} ({len(cells):,} cells)",
            method,
            f"{seconds:.3f}",
            f"{pixels / seconds / 1e6:,.0f}",
            f"{ee_all / seconds:.1f}x",
            f"{seconds / floor:.1f}",
        )
    table.add_section()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 6000])
    parser.add_argument("--levels", nargs="+", default=["h3_6", "h3_5", "healpix_10"])
    parser.add_argument("--xvec", action="store_true", help="also time xvec (slow)")
    args = parser.parse_args()
    console = Console(width=140)
    # The compiled kernels load (or compile, on a fresh checkout) once per process: time that
    # apart, so that the rows below measure the work done per raster.
    small = polar_raster(500)
    warm = timed(
        lambda: aggregate_raster(small, cells_over(small, "h3_6"), GridSpec.from_key("h3_6"))
    )
    console.print(f"compiled kernels loaded once per process in {warm:.2f} s (not in the table)")
    table = Table(title="Zonal statistics of one raster band per grid level (CPU)")
    for column in (
        "raster",
        "grid level",
        "method",
        "seconds",
        "Mpx/s",
        "exactextract / it",
        "it / floor",
    ):
        table.add_column(column, justify="right")
    for size in args.sizes:
        raster = polar_raster(size)
        for key in args.levels:
            run_case(table, f"{size}x{size} 32 m", raster, key, args.xvec)
    run_case(table, "ERA5 0.25 deg x 24", era5_raster(), "h3_3", args.xvec)
    console.print(table)


if __name__ == "__main__":
    main()
