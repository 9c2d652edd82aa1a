"""Raster-to-grid aggregation: this engine vs exactextract, xvec and a memory pass.

Builds one EPSG:3413 float32 raster at 32 m with 10 % nodata per size, the h3_6, h3_5 and
healpix_10 cells over it, and an ERA5-like case (0.25 degree, 50 N to the pole, 24 time steps,
h3_3; exactextract runs on the first time step, times 24). Each method computes mean, sum, std,
min, max, count and median (exactextract also without the median); the floor is one
``np.nansum`` over the raster.

With ``--region DATA_DIR`` (a data directory where the sample region's ``terrain_derivatives``
and ``grid_cells`` are materialised, e.g. by ``entropice demo``) it adds the row "sample
region, all levels, all terrain bands": every statistic of the terrain features (mean, std,
min, max, median, quartiles, valid fraction) of all 13 variables on all nine grid levels, by
the exact one-pass engine (``spatial.levels``, with and without building its atoms), by the
sampled path that was the default before (``min_pixels_per_cell=2500`` from the stored
overviews), by exactextract (one level, ``--ee-bands`` bands, scaled to all bands and levels)
and a floor (reading each band and one ``np.nansum`` over it).

Run: ``.venv/bin/python benchmarks/aggregation.py [--sizes 3000 6000] [--xvec] [--region DIR]``
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
from exactextract.raster import NumPyRasterSource
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


REGION_LEVELS = (
    "h3_3", "h3_4", "h3_5", "h3_6", "healpix_6", "healpix_7", "healpix_8", "healpix_9",
    "healpix_10",
)  # fmt: skip


def region_case(table: Table, data_dir: str, ee_level: str, ee_bands: int) -> None:
    """Time the terrain features of the sample region on all nine levels (see the docstring)."""
    from pathlib import Path

    from entropice_core.features.terrain import (
        NOT_AGGREGATED,
        TERRAIN_STATISTICS,
        terrain_features,
        terrain_features_levels,
    )
    from entropice_core.io.icechunk import read_dataset_version
    from entropice_core.spatial.levels import build_level_map, crop_to_cells
    from entropice_core.terrain.overviews import GROUP

    root = Path(data_dir)
    repo = root / "arcticdem" / "derivatives.icechunk"
    # as terrain_statistics reads it (io.assets.load_dataset): lazily indexed, zarr reads windows
    rasters = read_dataset_version(repo, None, dask=False).set_coords("spatial_ref")
    overviews = read_dataset_version(repo, GROUP)
    names = sorted(str(v) for v in rasters.data_vars if v not in NOT_AGGREGATED)
    rasters = rasters[names]
    levels = {k: gpd.read_parquet(root / "grids" / f"{k}.parquet") for k in REGION_LEVELS}
    rasters = crop_to_cells(rasters, levels)  # what aggregate_levels reads: the cells' window
    grid = RasterGrid.from_xarray(rasters)
    band_pixels = grid.width * grid.height * len(names) * len(levels)
    label = f"sample region {grid.width}x{grid.height}, {len(names)} bands"
    what = f"all 9 levels ({sum(map(len, levels.values())):,} cells)"
    results: list[tuple[str, float]] = []

    def floor() -> None:
        for name in names:
            np.nansum(rasters[name].to_numpy())

    floor_s = timed(floor)
    level_map = None

    def build() -> None:
        nonlocal level_map
        level_map = build_level_map(levels, grid)

    map_s = timed(build)
    cached = timed(
        lambda: terrain_features_levels(rasters, levels, TERRAIN_STATISTICS, level_map=level_map)
    )
    results.append(("exact one pass: atoms + all stats", map_s + cached))
    results.append(("exact one pass: cached atoms", cached))
    results.append(("exact one pass: building the atoms", map_s))

    def sampled_run(key: str) -> None:
        spec = GridSpec.from_key(key)
        terrain_features(rasters, levels[key], spec, min_pixels_per_cell=2500, overviews=overviews)

    sampled = sum(timed(lambda k=key: sampled_run(k)) for key in REGION_LEVELS)
    results.append(("before: sampled (2500 px/cell), per level", sampled))
    polygons = gpd.GeoDataFrame(geometry=project_cells(levels[ee_level], grid), crs=grid.crs)
    ops = [*EE_STATS, "quantile(q=0.25)", "quantile(q=0.75)"]
    # exactextract's cost varies sixfold between bands (its quantiles go by distinct values):
    # an evenly spread subset of the sorted bands, from a NumPy source (its fastest input)
    chosen = [names[round(i * (len(names) - 1) / max(ee_bands - 1, 1))] for i in range(ee_bands)]
    ee = 0.0
    for name in dict.fromkeys(chosen):
        band = rasters[name].compute()
        source = NumPyRasterSource(
            band.to_numpy(), *band.rio.bounds(), nodata=np.nan, srs_wkt=grid.crs.to_wkt()
        )
        ee += timed(lambda s=source: exact_extract(s, polygons, ops, output="pandas"))
    ee_bands = len(dict.fromkeys(chosen))
    ee_all = ee * len(names) / ee_bands * len(levels)
    results.append((f"exactextract ({ee_level}, {ee_bands} bands, scaled)", ee_all))
    results.append(("floor: read + np.nansum per band", floor_s))
    for method, seconds in results:
        table.add_row(
            label,
            what,
            method,
            f"{seconds:.1f}",
            f"{band_pixels / seconds / 1e6:,.0f}",
            f"{ee_all / seconds:.1f}x",
            f"{seconds / floor_s:.1f}",
        )
    table.add_section()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 6000])
    parser.add_argument("--levels", nargs="+", default=["h3_6", "h3_5", "healpix_10"])
    parser.add_argument("--xvec", action="store_true", help="also time xvec (slow)")
    parser.add_argument("--region", help="data dir of the materialised sample region")
    parser.add_argument("--region-only", action="store_true", help="only the region row")
    parser.add_argument("--ee-level", default="h3_5", help="exactextract's level (region)")
    parser.add_argument(
        "--ee-bands", type=int, default=13, help="exactextract's bands (region; 13: all)"
    )
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
    if args.region:
        region_case(table, args.region, args.ee_level, args.ee_bands)
    if not args.region_only:
        for size in args.sizes:
            raster = polar_raster(size)
            for key in args.levels:
                run_case(table, f"{size}x{size} 32 m", raster, key, args.xvec)
        run_case(table, "ERA5 0.25 deg x 24", era5_raster(), "h3_3", args.xvec)
    console.print(table)


if __name__ == "__main__":
    main()
