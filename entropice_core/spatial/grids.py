"""H3 and HEALPix grid cells over an area of interest, with their land area.

Conventions
-----------
- A cell belongs to an area of interest when its centre lies in it (H3's ``contain="center"``
  rule, applied to HEALPix as well). AOI polygons have straight edges in lon/lat, as in
  GeoPandas and in H3's own polygon fill.
- H3 cells come from the ``h3`` package. HEALPix cells use NESTED ids on the sphere (no
  ellipsoid), the convention ``xdggs`` assumes when ``cell_ids`` carry no ``ellipsoid`` attr, and
  come from ``healpix-geo``. Latitudes are used as given (geodetic) on the grid's sphere, as
  both libraries do.
- Geometries are in EPSG:4326 with longitudes in [-180, 180]. A cell that crosses the
  antimeridian is a MultiPolygon cut at 180 degrees; a cell holding a pole reaches lat +-90 along
  the map edge. Cuts lie on the cell's own (great-circle) edges, so areas are preserved.
  HEALPix edges are not great circles, so they are densified (see :func:`healpix_edge_steps`).
- ``land_area_km2`` is a true area on the WGS84 ellipsoid: the cell's area with its vertices read
  as geodetic coordinates (about 0.7 % larger than the same cell on the authalic sphere north of
  50 N), times the cell's land fraction.
"""

from __future__ import annotations

from collections.abc import Callable

import geopandas as gpd
import h3
import healpix_geo.nested as healpix
import numpy as np
import shapely
import shapely.affinity
from h3.api import numpy_int as h3_int

from entropice_core.config import AreaOfInterest, GridCellsConfig, GridSpec
from entropice_core.spatial.geodesy import (
    AUTHALIC_RADIUS_KM,
    great_circle_crossing_lat,
    ring_area_km2,
)
from entropice_core.spatial.watermask import land_fractions

#: healpix-geo ellipsoid name matching xdggs's default (no ``ellipsoid`` attr = sphere).
HEALPIX_ELLIPSOID = "sphere"
_POLE_TOLERANCE_DEG = 1e-9

Progress = Callable[[str], None]


def healpix_edge_steps(level: int, centre_lat: np.ndarray) -> np.ndarray:
    """Choose vertices per HEALPix cell edge so that the polygon keeps the cell's area to 0.1 %.

    HEALPix edges are curves, and the closer a cell is to the pole relative to its size the more
    they bend away from the geodesics that join polygon vertices (measured against the exact
    equal area: 2 steps give <= 0.1 % where size / pole distance < 0.1, 4 steps <= 0.07 % up to 1,
    and the cells touching the pole need 16 for 0.05 %).

    Parameters
    ----------
    level : int
        HEALPix level.
    centre_lat : numpy.ndarray
        Latitudes of the cell centres (degrees).

    Returns
    -------
    numpy.ndarray
        Steps per edge (2, 4 or 16) for each cell.
    """
    size_deg = np.degrees(np.sqrt(4 * np.pi / (12 * 4**level)))
    ratio = size_deg / np.maximum(90.0 - np.abs(centre_lat), 1e-9)
    return np.select([ratio < 0.1, ratio < 1.0], [2, 4], default=16)


def cell_ids(spec: GridSpec, aoi: AreaOfInterest) -> np.ndarray:
    """List the cells of a grid level whose centre lies in an area of interest.

    Parameters
    ----------
    spec : GridSpec
        Grid and level.
    aoi : AreaOfInterest
        Area of interest (EPSG:4326).

    Returns
    -------
    numpy.ndarray
        Sorted, unique uint64 cell ids.

    Raises
    ------
    ValueError
        If no cell has its centre in ``aoi`` (the area is smaller than one cell).
    """
    parts = _parts_for_fill(aoi)
    if spec.grid == "h3":
        found = [
            h3_int.h3shape_to_cells_experimental(
                h3.geo_to_h3shape(part), spec.level, contain="center"
            )
            for part in parts
        ]
    else:
        found = [_healpix_cells_in(part, spec.level) for part in parts]
    ids = np.unique(np.concatenate(found).astype(np.uint64)) if found else np.array([], np.uint64)
    if ids.size == 0:
        raise ValueError(
            f"no {spec.key} cell has its centre in {aoi.name!r}: the area is smaller than one "
            f"cell; enlarge it or choose a finer level"
        )
    return ids


def _parts_for_fill(aoi: AreaOfInterest) -> list[shapely.Polygon]:
    """Split the AOI into pieces no wider than 90 degrees, which H3's fill handles near the pole."""
    pieces: list[shapely.Polygon] = []
    for part in aoi.parts:
        minx, miny, maxx, maxy = part.bounds
        for west in np.arange(minx, maxx, 90.0):
            piece = shapely.clip_by_rect(part, west, miny, min(west + 90.0, maxx), maxy)
            pieces.extend(
                p
                for p in getattr(piece, "geoms", [piece])
                if isinstance(p, shapely.Polygon) and p.area > 0
            )
    return pieces


def _healpix_cells_in(part: shapely.Polygon, level: int) -> np.ndarray:
    minx, miny, maxx, maxy = part.bounds
    # healpix-geo wants longitudes in [0, 360) and panics (uncatchable) on 360 itself; its zone
    # coverage also misses cells when a zone ends exactly on a base-cell meridian (0.4.1: the
    # zone 0..90 E returns 308,480 of 368,511 cells), so zones are widened by a hair: the centre
    # test below decides membership.
    west, east = minx % 360.0, maxx % 360.0
    boxes = [(west, east)] if west < east else [(west, 360.0), (0.0, east)]
    if minx == -180.0 and maxx == 180.0:
        boxes = [(0.0, 360.0)]
    last = float(np.nextafter(360.0, 0.0))
    candidates = []
    for lo, hi in boxes:
        if hi <= lo:
            continue
        east_edge = min(last, hi + 1e-6)
        # a zone starting exactly at 0 misses cells (0.4.1: 0..1E, 50..52N at level 6 gives
        # 2 of 4): start a hair east and cover the meridian with a zone that wraps across it
        zones = [(lo - 1e-6, east_edge)] if lo > 1e-6 else [(1e-6, east_edge), (360 - 1e-6, 1e-6)]
        for west_edge, east_edge in zones:
            bbox = (west_edge, miny, east_edge, maxy)
            ids, _, _ = healpix.zone_coverage(bbox, level, ellipsoid=HEALPIX_ELLIPSOID, flat=True)
            candidates.append(np.asarray(ids, dtype=np.uint64))
    ids = np.unique(np.concatenate(candidates))
    lon, lat = healpix.healpix_to_lonlat(ids, level, ellipsoid=HEALPIX_ELLIPSOID)
    lon = (np.asarray(lon) + 180.0) % 360.0 - 180.0
    return ids[shapely.intersects_xy(part, lon, np.asarray(lat))]


def cell_rings(spec: GridSpec, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Get the boundary vertices of cells, in groups of equal vertex count.

    H3 rings have 5 to 10 vertices; HEALPix edges are densified by :func:`healpix_edge_steps`.

    Parameters
    ----------
    spec : GridSpec
        Grid and level of ``ids``.
    ids : numpy.ndarray
        uint64 cell ids.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``(positions, lon, lat)`` triples: ``positions`` index into ``ids``; ``lon`` and
        ``lat`` are ``(len(positions), n_vertices)`` arrays in degrees.
    """
    if spec.grid == "healpix":
        _, centre_lat = healpix.healpix_to_lonlat(ids, spec.level, ellipsoid=HEALPIX_ELLIPSOID)
        steps = healpix_edge_steps(spec.level, np.asarray(centre_lat))
        groups = []
        for step in np.unique(steps):
            positions = np.flatnonzero(steps == step)
            lon, lat = healpix.vertices(
                ids[positions], spec.level, ellipsoid=HEALPIX_ELLIPSOID, step=int(step)
            )
            groups.append((positions, (np.asarray(lon) + 180.0) % 360.0 - 180.0, np.asarray(lat)))
        return groups
    boundaries = [h3_int.cell_to_boundary(c) for c in ids.tolist()]
    sizes = np.fromiter(map(len, boundaries), dtype=np.int64, count=len(boundaries))
    groups = []
    for size in np.unique(sizes):
        positions = np.flatnonzero(sizes == size)
        latlon = np.array([boundaries[i] for i in positions.tolist()])
        groups.append((positions, latlon[..., 1], latlon[..., 0]))
    return groups


def rings_to_polygons(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Build valid EPSG:4326 geometries from cell rings, cut at the antimeridian.

    Rings that touch or wind around a pole reach lat +-90 along the map edge.

    Parameters
    ----------
    lon, lat : numpy.ndarray
        ``(n_cells, n_vertices)`` ring vertices (degrees), as from :func:`cell_rings`.

    Returns
    -------
    numpy.ndarray
        Object array of shapely Polygons (MultiPolygons where a cell is cut at 180 degrees).
    """
    step = (np.diff(lon, axis=1) + 180.0) % 360.0 - 180.0
    unwrapped = np.concatenate([lon[:, :1], lon[:, :1] + np.cumsum(step, axis=1)], axis=1)
    closing = (lon[:, 0] - unwrapped[:, -1] + 180.0) % 360.0 - 180.0
    winds = np.abs(step.sum(axis=1) + closing) > 180.0
    touches_pole = (np.abs(lat) > 90.0 - _POLE_TOLERANCE_DEG).any(axis=1)
    leaves_map = (unwrapped.min(axis=1) < -180.0) | (unwrapped.max(axis=1) > 180.0)
    special = winds | touches_pole | leaves_map

    geoms = np.empty(len(lon), dtype=object)
    plain = ~special
    geoms[plain] = shapely.polygons(np.stack([unwrapped[plain], lat[plain]], axis=-1))
    for i in np.flatnonzero(special):
        geoms[i] = _cut_ring(lon[i], lat[i])
    return geoms


def _cut_ring(lon: np.ndarray, lat: np.ndarray) -> shapely.Polygon | shapely.MultiPolygon:
    """Turn a ring that touches a pole, winds around it or crosses 180 degrees into geometry."""
    points: list[tuple[float, float]] = []
    n = len(lon)
    for k in range(n):
        if abs(lat[k]) > 90.0 - _POLE_TOLERANCE_DEG:
            # A vertex on the pole: its longitude is arbitrary, so the edges reach the pole
            # along the meridians of the neighbouring vertices.
            pole = float(np.sign(lat[k]) * 90.0)
            points += [(lon[k - 1], pole), (lon[(k + 1) % n], pole)]
        else:
            points.append((lon[k], lat[k]))
    # Drop repeated vertices (H3 padding) before unwrapping.
    points = [p for j, p in enumerate(points) if j == 0 or p != points[j - 1]]
    if points[0] == points[-1]:
        points.pop()

    unwrapped = [points[0]]
    for x, y in points[1:] + points[:1]:
        prev_x, prev_y = unwrapped[-1]
        x = prev_x + ((x - prev_x + 180.0) % 360.0 - 180.0)
        for meridian in _meridians_between(prev_x, x):
            crossing = great_circle_crossing_lat(prev_x, prev_y, x, y, meridian)
            unwrapped.append((meridian, crossing))
        unwrapped.append((x, y))
    start_x, end_x = unwrapped[0][0], unwrapped[-1][0]
    ring = unwrapped[:-1] if abs(end_x - start_x) < 180.0 else unwrapped
    if abs(end_x - start_x) >= 180.0:
        # The ring winds around a pole: close it along the map edge at +-90.
        pole = 90.0 if np.mean([p[1] for p in ring]) > 0 else -90.0
        ring = [*ring, (end_x, pole), (start_x, pole)]
    shape = shapely.make_valid(shapely.Polygon(ring))
    pieces = []
    for shift in (-360.0, 0.0, 360.0):
        piece = shapely.clip_by_rect(
            shapely.affinity.translate(shape, xoff=shift), -180.0, -90.0, 180.0, 90.0
        )
        pieces += [g for g in getattr(piece, "geoms", [piece]) if g.area > 0]
    merged = shapely.union_all(pieces)
    if isinstance(merged, shapely.GeometryCollection) and not isinstance(
        merged, shapely.MultiPolygon
    ):
        merged = shapely.MultiPolygon([g for g in merged.geoms if isinstance(g, shapely.Polygon)])
    return merged


def _meridians_between(x0: float, x1: float) -> list[float]:
    """Return the odd multiples of 180 strictly between two unwrapped longitudes, in order."""
    lo, hi = sorted((x0, x1))
    first = np.floor((lo - 180.0) / 360.0) * 360.0 + 180.0
    crossings = [m for m in np.arange(first, hi + 360.0, 360.0) if lo < m < hi]
    return crossings if x0 <= x1 else crossings[::-1]


def grid_cells(
    spec: GridSpec,
    aoi: AreaOfInterest,
    water: gpd.GeoDataFrame,
    config: GridCellsConfig = GridCellsConfig(),
    progress: Progress | None = None,
) -> gpd.GeoDataFrame:
    """Build the cells of a grid level over an area of interest, with their land area.

    Cells whose centre lies in ``aoi`` are kept when their land fraction exceeds
    ``config.min_land_fraction``.

    Parameters
    ----------
    spec : GridSpec
        Grid and level.
    aoi : AreaOfInterest
        Area of interest (EPSG:4326).
    water : geopandas.GeoDataFrame
        Water polygons in EPSG:4326 (the ``watermask`` asset, see :func:`water_polygons`).
    config : GridCellsConfig, optional
        Land-mask resolution and minimum land fraction.
    progress : callable, optional
        Called with a short message before each stage (CLI progress, Dagster logs).

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``cell_id`` (uint64), ``land_area_km2`` (WGS84 area times land fraction),
        ``land_fraction`` and ``geometry`` (EPSG:4326); ``attrs`` carries the grid, level
        and AOI name.

    Raises
    ------
    ValueError
        If no cell has its centre in ``aoi``, if every cell is ocean, or if cells reach
        outside the watermask.
    """
    report = progress or (lambda message: None)
    report(f"{spec.key}: finding cells in {aoi.name}")
    ids = cell_ids(spec, aoi)
    report(f"{spec.key}: building {len(ids):,} cell polygons")
    geometry, area = np.empty(len(ids), dtype=object), np.empty(len(ids))
    for positions, lon, lat in cell_rings(spec, ids):
        geometry[positions] = rings_to_polygons(lon, lat)
        area[positions] = ring_area_km2(lon, lat, surface="wgs84")
    report(f"{spec.key}: land fractions of {len(ids):,} cells")
    fraction = land_fractions(geometry, water, resolution_deg=config.mask_resolution_deg)
    keep = fraction > config.min_land_fraction
    cells = gpd.GeoDataFrame(
        {
            "cell_id": ids[keep],
            "land_area_km2": area[keep] * fraction[keep],
            "land_fraction": fraction[keep],
        },
        geometry=geometry[keep],
        crs="EPSG:4326",
    )
    cells.attrs.update(grid=spec.grid, level=spec.level, aoi=aoi.name)
    if cells.empty:
        raise ValueError(
            f"every {spec.key} cell in {aoi.name!r} is ocean (land fraction <= "
            f"{config.min_land_fraction}); choose an area with land or lower min_land_fraction"
        )
    return cells


def mean_cell_area_km2(spec: GridSpec) -> float:
    """Return the average cell area of a grid level on the authalic sphere.

    Parameters
    ----------
    spec : GridSpec
        Grid and level.

    Returns
    -------
    float
        Area in km^2 (H3: ``h3.average_hexagon_area``; HEALPix: the sphere's area divided by
        the number of cells).
    """
    if spec.grid == "h3":
        return float(h3.average_hexagon_area(spec.level, unit="km^2"))
    return 4 * np.pi * AUTHALIC_RADIUS_KM**2 / (12 * 4**spec.level)


def parent_cells(spec: GridSpec, ids: np.ndarray, level: int) -> np.ndarray:
    """Map each cell to its ancestor at a coarser (or equal) level.

    H3 through ``h3.cell_to_parent``; HEALPix NESTED ids drop two bits per level.

    Parameters
    ----------
    spec : GridSpec
        Grid and level of ``ids``.
    ids : numpy.ndarray
        Cell ids.
    level : int
        Level of the ancestors, between 0 and ``spec.level``.

    Returns
    -------
    numpy.ndarray
        uint64 ancestor ids, one per cell.

    Raises
    ------
    ValueError
        If ``level`` is negative or finer than ``spec.level``.
    """
    if not 0 <= level <= spec.level:
        raise ValueError(
            f"parent level {level} must lie between 0 and the cells' level {spec.level}"
        )
    ids = np.asarray(ids, dtype=np.uint64)
    if spec.grid == "healpix":
        return ids >> np.uint64(2 * (spec.level - level))
    return np.fromiter(
        (h3_int.cell_to_parent(c, level) for c in ids), dtype=np.uint64, count=len(ids)
    )


#: Padding of :func:`cell_neighbours` rows: not a cell id of either grid.
NO_CELL = np.iinfo(np.uint64).max


def cell_neighbours(spec: GridSpec, ids: np.ndarray, k: int = 1) -> np.ndarray:
    """Find, for each cell, the cells within ``k`` steps of it, itself excluded.

    H3: ``h3.grid_disk``; HEALPix: ``healpix_geo``'s k-th neighbourhood (edge and corner
    neighbours: 8 cells for k = 1).

    Parameters
    ----------
    spec : GridSpec
        Grid and level of ``ids``.
    ids : numpy.ndarray
        Cell ids.
    k : int, default 1
        Number of steps; below 1 gives no neighbours.

    Returns
    -------
    numpy.ndarray
        ``(len(ids), m)`` uint64 ids padded with :data:`NO_CELL` (pentagons and HEALPix
        base-cell corners have fewer neighbours).
    """
    ids = np.asarray(ids, dtype=np.uint64)
    if k < 1:
        return np.full((ids.size, 0), NO_CELL, dtype=np.uint64)
    if spec.grid == "h3":
        table = np.full((ids.size, 3 * k * (k + 1) + 1), NO_CELL, dtype=np.uint64)
        for row, cell in enumerate(ids):
            disk = h3_int.grid_disk(cell, k)
            table[row, : len(disk)] = disk
    else:
        found = healpix.kth_neighbourhood(ids, spec.level, k)
        table = np.where(found >= 0, found, 0).astype(np.uint64)
        table[found < 0] = NO_CELL
    table[table == ids[:, None]] = NO_CELL
    return table
