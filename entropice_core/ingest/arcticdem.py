"""ArcticDEM v4.1 32 m mosaic: the tile index and reading tiles as one lazy mosaic.

Facts (PGC data description): float32 GeoTIFF heights in metres above the WGS84 ellipsoid,
nodata -9999, EPSG:3413, 100 km tiles named ``{row}_{col}`` with row = floor((y + 4,000,000) /
100 km) + 1 and col likewise from x, 3125 x 3125 pixels at 32 m, stored as
``{row}_{col}/{row}_{col}_32m_v4.1_dem.tif``. The sample region writes the same layout.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import rioxarray
import shapely
import xarray as xr
from pyproj import Transformer

from entropice_core.config import GridSpec
from entropice_core.spatial.aggregators import AggregationConfig, aggregate_raster

CRS = "EPSG:3413"
TILE_ORIGIN = -4_000_000.0
TILE_SIZE = 100_000.0
PIXEL_SIZE = 32.0
TILE_PIXELS = 3125
NODATA = -9999.0
VERSION = "v4.1"
#: Dask chunk edge for mosaic reads (pixels): 1024 x 1024 float32 = 4 MiB.
CHUNK = 1024


def tile_of(x: float, y: float) -> tuple[int, int]:
    """``(row, col)`` of the 100 km mosaic tile holding the EPSG:3413 point ``(x, y)``."""
    row = int(np.floor((y - TILE_ORIGIN) / TILE_SIZE)) + 1
    col = int(np.floor((x - TILE_ORIGIN) / TILE_SIZE)) + 1
    return row, col


def tile_bounds(row: int, col: int) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of tile ``row, col`` in EPSG:3413 metres."""
    left = TILE_ORIGIN + (col - 1) * TILE_SIZE
    bottom = TILE_ORIGIN + (row - 1) * TILE_SIZE
    return left, bottom, left + TILE_SIZE, bottom + TILE_SIZE


def tile_path(root: Path, row: int, col: int) -> Path:
    """Where the mosaic puts the 32 m DEM of a tile, relative to ``root``."""
    name = f"{row}_{col}"
    return Path(root) / name / f"{name}_32m_{VERSION}_dem.tif"


def project_lonlat_box(bbox: tuple[float, float, float, float]) -> shapely.Polygon:
    """A lon/lat box as a polygon in EPSG:3413, densified so its curved edges stay curved."""
    box = shapely.segmentize(shapely.box(*bbox), 0.02)
    to_polar = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    return shapely.transform(box, lambda xy: np.column_stack(to_polar.transform(*xy.T)))


def tiles_for(bbox: tuple[float, float, float, float]) -> list[tuple[int, int]]:
    """Tiles whose square intersects the lon/lat box ``bbox``."""
    area = project_lonlat_box(bbox)
    minx, miny, maxx, maxy = area.bounds
    row0, col0 = tile_of(minx, miny)
    row1, col1 = tile_of(maxx, maxy)
    return [
        (row, col)
        for row in range(row0, row1 + 1)
        for col in range(col0, col1 + 1)
        if area.intersects(shapely.box(*tile_bounds(row, col)))
    ]


def _tile_rowcol(path: Path) -> tuple[int, int]:
    row, col = path.name.split("_")[:2]
    return int(row), int(col)


def open_mosaic(paths: list[Path]) -> xr.DataArray:
    """The tiles as one lazy (Dask) elevation mosaic in EPSG:3413; nodata and gaps are NaN.

    Nothing is read until computed, so the mosaic of any number of tiles costs no memory;
    missing tiles inside the covered rectangle are all-NaN chunks.
    """
    if not paths:
        raise ValueError("no ArcticDEM tiles given: download the tiles covering the area first")
    tiles = {}
    for path in paths:
        tile = rioxarray.open_rasterio(
            path, masked=True, chunks={"x": CHUNK, "y": CHUNK}, cache=False, lock=False
        )
        if tile.rio.crs is None:
            raise ValueError(f"{path} has no CRS; ArcticDEM tiles are {CRS}")
        if tile.rio.crs.to_epsg() != 3413 or tile.rio.resolution() != (PIXEL_SIZE, -PIXEL_SIZE):
            raise ValueError(
                f"{path} is {tile.rio.crs} at {tile.rio.resolution()} m, not the 32 m "
                f"ArcticDEM mosaic in {CRS}"
            )
        tiles[_tile_rowcol(Path(path))] = tile.isel(band=0, drop=True).astype(np.float32)
    rows = range(max(r for r, _ in tiles), min(r for r, _ in tiles) - 1, -1)  # north first
    cols = range(min(c for _, c in tiles), max(c for _, c in tiles) + 1)
    empty = da.full((TILE_PIXELS, TILE_PIXELS), np.nan, dtype=np.float32, chunks=CHUNK)
    blocks = [[tiles[(r, c)].data if (r, c) in tiles else empty for c in cols] for r in rows]
    left, _, _, top = tile_bounds(rows[0], cols[0])
    x = left + PIXEL_SIZE * (np.arange(len(cols) * TILE_PIXELS) + 0.5)
    y = top - PIXEL_SIZE * (np.arange(len(rows) * TILE_PIXELS) + 0.5)
    mosaic = xr.DataArray(
        da.block(blocks), coords={"y": y, "x": x}, dims=("y", "x"), name="elevation"
    )
    mosaic.attrs.update(units="m", long_name="height above the WGS84 ellipsoid")
    return mosaic.rio.write_crs(CRS).rio.write_nodata(np.nan, encoded=False)


#: Per-cell statistics of every terrain variable (mean, spread, extremes and quartiles).
TERRAIN_STATISTICS = AggregationConfig(
    statistics=("mean", "std", "min", "max", "median", "quantile", "valid_fraction"),
    quantiles=(0.25, 0.75),
)


def find_tiles(
    folder: str | Path, bbox: tuple[float, float, float, float]
) -> tuple[list[Path], list[Path]]:
    """The 32 m DEM tiles under ``folder`` that cover the lon/lat ``bbox``: (present, missing).

    Missing tiles are returned rather than refused because the release has no tiles over open
    ocean; callers report them. No tile at all is an error naming the expected path.
    """
    folder = Path(folder)
    paths = [tile_path(folder, row, col) for row, col in tiles_for(bbox)]
    present = [p for p in paths if p.exists()]
    if not present:
        raise FileNotFoundError(
            f"no ArcticDEM 32 m tile for {bbox} under {folder} (expected e.g. {paths[0]}); "
            "download the tiles or run `make demo` for the sample region"
        )
    return present, [p for p in paths if not p.exists()]


def terrain_features(tiles: list[Path], cells: gpd.GeoDataFrame, spec: GridSpec) -> xr.Dataset:
    """Per-cell statistics of ArcticDEM elevation over the cells of one grid level.

    Returns an xdggs L2 dataset with ``elevation_<statistic>`` variables (quartiles along a
    ``quantile`` dim); statistics as in :data:`TERRAIN_STATISTICS` and docs/aggregation.md.
    """
    mosaic = open_mosaic(tiles)
    features = aggregate_raster(
        mosaic.to_dataset(name="elevation"), cells, spec, TERRAIN_STATISTICS
    )
    for name in features.data_vars:
        if name != "elevation_valid_fraction":
            features[name].attrs["units"] = "m"
    features.attrs["source"] = "ArcticDEM v4.1 32 m mosaic"
    return features
