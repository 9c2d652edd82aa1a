"""Water polygons for an area of interest, and the land fraction of grid cells.

Sources
-------
``global-land-mask`` (default, offline, installed from PyPI): the GLOBE-derived ocean mask on a
30 arc-second (about 0.9 km N-S, 0.3 km E-W at 70 N) lat/lon grid. It marks **oceans only**:
most lakes, including large Arctic ones (Great Bear Lake), count as land, and narrow fjords,
channels and river mouths below about 1 km are missed. Coastlines are pixel-stepped.

``file``: any GeoParquet/GeoPackage of water polygons a user trusts more (lakes included, e.g.
a hydrography layer), reprojected to EPSG:4326. It is taken to cover the whole area.

The watermask is stored as one row per ``tile_deg`` x ``tile_deg`` tile (water geometry, possibly
empty, plus the tile's bounds), so that a consumer knows where the mask is defined and each
rasterisation touches only the polygons of a few tiles.
"""

from __future__ import annotations

import importlib.util
import math
import zipfile
from pathlib import Path

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from affine import Affine
from rasterio.features import rasterize, shapes
from rasterio.transform import from_origin

from entropice_core.config import AreaOfInterest, WatermaskConfig
from entropice_core.io.vector import read_vector

#: Margin around the AOI so that cells whose centre is inside but which reach outside are covered
#: (half the diagonal of the coarsest default cells, H3 res 3, is about 100 km).
MARGIN_KM = 250.0
_KM_PER_DEG = 111.2
_GLOBE_RES_DEG = 1 / 120


def watermask_extent(
    aoi: AreaOfInterest, tile_deg: float
) -> list[tuple[float, float, float, float]]:
    """Compute the tile-aligned lon/lat boxes that cover ``aoi`` plus :data:`MARGIN_KM`.

    Parameters
    ----------
    aoi : AreaOfInterest
        Area of interest (EPSG:4326).
    tile_deg : float
        Tile size (degrees).

    Returns
    -------
    list of (float, float, float, float)
        One ``(west, south, east, north)`` box per part of ``aoi``, clipped to the globe.
    """
    boxes = []
    for part in aoi.parts:
        minx, miny, maxx, maxy = part.bounds
        lat_margin = MARGIN_KM / _KM_PER_DEG
        south, north = max(-90.0, miny - lat_margin), min(90.0, maxy + lat_margin)
        widest = max(abs(south), abs(north))
        lon_margin = (
            180.0 if widest >= 89.0 else MARGIN_KM / (_KM_PER_DEG * np.cos(np.radians(widest)))
        )
        west, east = max(-180.0, minx - lon_margin), min(180.0, maxx + lon_margin)
        boxes.append(
            (
                np.floor((west + 180.0) / tile_deg) * tile_deg - 180.0,
                np.floor((south + 90.0) / tile_deg) * tile_deg - 90.0,
                min(180.0, np.ceil((east + 180.0) / tile_deg) * tile_deg - 180.0),
                min(90.0, np.ceil((north + 90.0) / tile_deg) * tile_deg - 90.0),
            )
        )
    return boxes


def _tiles(aoi: AreaOfInterest, tile_deg: float) -> list[tuple[float, float, float, float]]:
    tiles = set()
    for west, south, east, north in watermask_extent(aoi, tile_deg):
        for x in np.arange(west, east - 1e-9, tile_deg):
            for y in np.arange(south, north - 1e-9, tile_deg):
                tiles.add(
                    (
                        round(x, 9),
                        round(y, 9),
                        round(min(x + tile_deg, 180.0), 9),
                        round(min(y + tile_deg, 90.0), 9),
                    )
                )
    return sorted(tiles)


def _tile_name(west: float, south: float) -> str:
    north_south = "N" if south >= 0 else "S"
    east_west = "E" if west >= 0 else "W"
    return f"{north_south}{abs(south):05.2f}{east_west}{abs(west):06.2f}"


def load_global_land_mask(south: float = -90.0) -> np.ndarray:
    """Load the rows of the global-land-mask ocean grid from 90 N down to ``south``.

    The whole grid is 0.9 GB and takes seconds to decompress; the rows are stored from the
    North Pole down, so an Arctic area streams only its top rows (a fifth north of 50 N) out
    of the package's data file, without importing the package (whose import loads the whole
    grid once more).

    Parameters
    ----------
    south : float, default -90
        Southernmost latitude needed, in degrees.

    Returns
    -------
    numpy.ndarray
        Boolean 30 arc-second grid (True = ocean), rows from 90 N, columns from 180 W.
    """
    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("global-land-mask is not installed: pip install global-land-mask")
    path = Path(spec.submodule_search_locations[0]) / "globe_combined_mask_compressed.npz"
    with zipfile.ZipFile(path) as archive, archive.open("mask.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        (rows, columns), fortran_order, dtype = read_header(stream)
        assert not fortran_order and dtype == np.bool_  # the package's layout
        wanted = min(rows, math.ceil((90.0 - south) / _GLOBE_RES_DEG))
        data = stream.read(wanted * columns)
    return np.frombuffer(data, dtype=np.bool_).reshape(wanted, columns)


def _ocean_polygons_from_mask(
    ocean: np.ndarray, tile: tuple[float, float, float, float]
) -> shapely.Geometry:
    west, south, east, north = tile
    row0 = round((90.0 - north) / _GLOBE_RES_DEG)
    row1 = round((90.0 - south) / _GLOBE_RES_DEG)
    col0 = round((west + 180.0) / _GLOBE_RES_DEG)
    col1 = round((east + 180.0) / _GLOBE_RES_DEG)
    window = ocean[row0:row1, col0:col1]
    if not window.any():
        return shapely.Polygon()
    transform = from_origin(west, north, _GLOBE_RES_DEG, _GLOBE_RES_DEG)
    polygons = [
        shapely.geometry.shape(geom)
        for geom, _ in shapes(window.astype(np.uint8), mask=window, transform=transform)
    ]
    return shapely.MultiPolygon(polygons) if len(polygons) > 1 else polygons[0]


def read_water_file(path: Path) -> gpd.GeoSeries:
    """Read water polygons from a user file, made valid and in EPSG:4326.

    Parameters
    ----------
    path : Path
        Any vector file :func:`entropice_core.io.vector.read_vector` reads.

    Returns
    -------
    geopandas.GeoSeries
        The polygons of the file (lines left by repairs dropped), EPSG:4326.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is unreadable, has no CRS or holds no polygons.
    """
    frame = read_vector(path, "watermask file")
    parts = shapely.get_parts(shapely.make_valid(frame.to_crs(4326).geometry.to_numpy()))
    geoms = parts[shapely.get_type_id(parts) == 3]  # polygons; repairs may leave lines
    if len(geoms) == 0:
        raise ValueError(f"watermask file {path} holds no polygons")
    return gpd.GeoSeries(geoms, crs="EPSG:4326")


def water_polygons(
    aoi: AreaOfInterest, config: WatermaskConfig = WatermaskConfig()
) -> gpd.GeoDataFrame:
    """Build the water polygons covering ``aoi`` plus a margin, one row per tile.

    Parameters
    ----------
    aoi : AreaOfInterest
        Area of interest (EPSG:4326).
    config : WatermaskConfig, optional
        Source (``global-land-mask`` or a user ``file``) and tile size.

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326, columns ``tile`` (name), ``west``, ``south``, ``east``, ``north`` (the
        tile's bounds), ``source`` and ``geometry`` (the water inside the tile; empty where the
        tile is all land).
    """
    tiles = _tiles(aoi, config.tile_deg)
    if config.source == "global-land-mask":
        ocean = load_global_land_mask(south=min(south for _, south, _, _ in tiles))
        water = [_ocean_polygons_from_mask(ocean, tile) for tile in tiles]
        source = "global-land-mask 1.0 (GLOBE ocean mask, 30 arc-second)"
    else:
        assert config.path is not None  # WatermaskConfig requires it for source="file"
        user = read_water_file(config.path)
        tree = shapely.STRtree(user.values)
        water = []
        for tile in tiles:
            box = shapely.box(*tile)
            hits = user.values[tree.query(box, predicate="intersects")]
            water.append(
                shapely.intersection(shapely.union_all(hits), box)
                if len(hits)
                else shapely.Polygon()
            )
        source = str(config.path)
    west, south, east, north = np.array(tiles).T
    return gpd.GeoDataFrame(
        {
            "tile": [_tile_name(w, s) for w, s, _, _ in tiles],
            "west": west,
            "south": south,
            "east": east,
            "north": north,
            "source": source,
        },
        geometry=water,
        crs="EPSG:4326",
    )


def _check_coverage(geometries: np.ndarray, bounds: np.ndarray, water: gpd.GeoDataFrame) -> None:
    covered = shapely.union_all(
        shapely.box(water["west"], water["south"], water["east"], water["north"])
    )
    outside = ~shapely.covers(covered, shapely.box(*bounds.T))
    # Cells cut at 180 degrees have a bounding box around the globe: test their parts.
    outside[outside] = ~shapely.covers(covered, geometries[outside])
    if outside.any():
        west, south, east, north = (
            bounds[outside].min(axis=0)[:2].tolist() + bounds[outside].max(axis=0)[2:].tolist()
        )
        raise ValueError(
            f"{outside.sum()} cells reach outside the watermask ({west:.2f},{south:.2f},"
            f"{east:.2f},{north:.2f} is not covered); materialise the watermask again for "
            "this area of interest"
        )


def land_fractions(
    geometries: np.ndarray,
    water: gpd.GeoDataFrame,
    resolution_deg: float = _GLOBE_RES_DEG,
    strip_deg: float = 2.5,
) -> np.ndarray:
    """Compute the fraction of each cell's area that is not water.

    Water polygons are rasterised on a global lat/lon grid of ``resolution_deg``; a pixel belongs
    to the cell that holds its centre, and pixels weigh by their true area (cos latitude). Cells
    whose bounding box is all land or all water are decided from an integral image; only coastal
    cells are rasterised, strip by strip, so memory stays bounded for the whole Arctic.

    Parameters
    ----------
    geometries : numpy.ndarray
        Cell geometries (EPSG:4326).
    water : geopandas.GeoDataFrame
        Water tiles from :func:`water_polygons`.
    resolution_deg : float, optional
        Pixel size of the rasterisation (degrees); 30 arc-seconds by default.
    strip_deg : float, default 2.5
        Height of the latitude strips rasterised at once (degrees).

    Returns
    -------
    numpy.ndarray
        Land fraction in [0, 1] per cell.

    Raises
    ------
    ValueError
        If a geometry is empty, or if cells reach outside the tiles of ``water``.
    """
    geometries = np.asarray(geometries)
    bounds = shapely.bounds(geometries)
    if np.isnan(bounds).any():
        raise ValueError("cell geometries must not be empty")
    _check_coverage(geometries, bounds, water)
    res = resolution_deg
    rows0 = np.floor((90.0 - bounds[:, 3]) / res + 1e-9).astype(np.int64)
    rows1 = np.ceil((90.0 - bounds[:, 1]) / res - 1e-9).astype(np.int64)
    cols0 = np.floor((bounds[:, 0] + 180.0) / res + 1e-9).astype(np.int64)
    cols1 = np.ceil((bounds[:, 2] + 180.0) / res - 1e-9).astype(np.int64)
    rows1, cols1 = np.maximum(rows1, rows0 + 1), np.maximum(cols1, cols0 + 1)

    has_water = ~water.geometry.is_empty.to_numpy()
    water_geoms = water.geometry.to_numpy()[has_water]
    tree = shapely.STRtree(water_geoms)
    fractions = np.empty(len(geometries))
    strip_of = rows0 // max(1, round(strip_deg / res))
    for strip in np.unique(strip_of):
        idx = np.flatnonzero(strip_of == strip)
        r_lo, r_hi = rows0[idx].min(), rows1[idx].max()
        c_lo, c_hi = cols0[idx].min(), cols1[idx].max()
        fractions[idx] = _strip_fractions(
            geometries[idx],
            rows0[idx] - r_lo,
            rows1[idx] - r_lo,
            cols0[idx] - c_lo,
            cols1[idx] - c_lo,
            water_geoms[
                tree.query(
                    shapely.box(
                        c_lo * res - 180.0, 90.0 - r_hi * res, c_hi * res - 180.0, 90.0 - r_lo * res
                    )
                )
            ],
            transform=from_origin(c_lo * res - 180.0, 90.0 - r_lo * res, res, res),
            shape=(int(r_hi - r_lo), int(c_hi - c_lo)),
        )
    return fractions


def _strip_fractions(geoms, r0, r1, c0, c1, water_geoms, transform, shape) -> np.ndarray:
    if len(water_geoms):
        wet = rasterize(
            ((g, 1) for g in water_geoms), out_shape=shape, transform=transform, dtype="uint8"
        )
    else:
        wet = np.zeros(shape, dtype=np.uint8)
    integral = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(wet, axis=0, dtype=np.int64), axis=1, out=integral[1:, 1:])
    wet_count = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    fractions = np.where(wet_count == 0, 1.0, 0.0)
    mixed = np.flatnonzero((wet_count > 0) & (wet_count < (r1 - r0) * (c1 - c0)))
    if mixed.size == 0:
        return fractions
    owner = rasterize(
        zip(geoms[mixed], range(1, mixed.size + 1), strict=True),
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="int32",
    )
    rows, cols = np.nonzero(owner)
    lat = transform.f + (rows + 0.5) * transform.e
    weight = np.cos(np.radians(lat))
    labels = owner[rows, cols]
    total = np.bincount(labels, weights=weight, minlength=mixed.size + 1)[1:]
    dry = np.bincount(labels, weights=weight * (wet[rows, cols] == 0), minlength=mixed.size + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = dry / total
    # A cell smaller than a pixel holds no pixel centre: read the pixel under its centre.
    tiny = total == 0
    if tiny.any():
        centre = shapely.point_on_surface(geoms[mixed[tiny]])
        inv = ~transform
        col, row = inv * (shapely.get_x(centre), shapely.get_y(centre))
        row = np.clip(np.floor(row).astype(int), 0, shape[0] - 1)
        col = np.clip(np.floor(col).astype(int), 0, shape[1] - 1)
        share[tiny] = 1.0 - wet[row, col]
    fractions[mixed] = share
    return fractions


def water_raster(water: gpd.GeoDataFrame, like: xr.DataArray) -> xr.DataArray:
    """Rasterise the water polygons lazily on the grid of a raster.

    Polygons are projected to the raster's CRS once (densified so edges stay curved) and each
    Dask chunk is rasterised on its own (pixel centres inside a polygon are water), so memory
    stays one chunk. Pixels outside the polygons, and outside the mask's tiles, are land.

    Parameters
    ----------
    water : geopandas.GeoDataFrame
        Water tiles from :func:`water_polygons`.
    like : xarray.DataArray
        2-D raster with a CRS (rioxarray) whose grid and chunks the mask follows (chunks of
        1024 pixels if it is not Dask-backed).

    Returns
    -------
    xarray.DataArray
        Dask-backed boolean raster named ``water`` (True = water) with the coords of ``like``.

    Raises
    ------
    ValueError
        If ``like`` has no CRS.
    """
    if like.rio.crs is None:
        raise ValueError("the raster to mask has no CRS; write one with .rio.write_crs(...)")
    geoms = water.geometry[~water.geometry.is_empty]
    projected = gpd.GeoSeries(geoms.segmentize(0.01).to_numpy(), crs=water.crs)
    polygons = projected.to_crs(like.rio.crs).make_valid().to_numpy()
    data = like.data if isinstance(like.data, da.Array) else da.zeros(like.shape, chunks=1024)
    # one task holds the polygons and every chunk's task depends on it: captured in each
    # task's function they were copied into each of them (at 16x the sample's area, 1.6 MB
    # pickled, times 2,401 chunks, kept with the tasks' specs on a worker)
    shared = dask.delayed(polygons, pure=True)
    mask = da.map_blocks(
        _water_block,
        data,
        shared,
        transform=like.rio.transform(),
        dtype=bool,
        meta=np.array((), dtype=bool),
    )
    return xr.DataArray(mask, coords=like.coords, dims=like.dims, name="water")


def _water_block(
    chunk: np.ndarray, polygons: np.ndarray, transform: Affine, block_info: dict
) -> np.ndarray:
    """Rasterise the polygons that reach one chunk (pixel centres inside are water)."""
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    local = transform @ Affine.translation(c0, r0)
    bounds = (*(local @ (0, r1 - r0)), *(local @ (c1 - c0, 0)))
    hits = polygons[shapely.STRtree(polygons).query(shapely.box(*bounds))]
    if not len(hits):
        return np.zeros((r1 - r0, c1 - c0), dtype=bool)
    return rasterize(
        ((g, 1) for g in hits), out_shape=(r1 - r0, c1 - c0), transform=local, dtype="uint8"
    ).astype(bool)
