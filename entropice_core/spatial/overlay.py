"""Exact overlay of small polygons (RTS footprints) with grid cells.

Most footprints (median about 2,000 m^2) lie wholly inside one cell, so one spatial-index
query (cells containing footprints) settles them, each taking its whole area to its cell;
only the few that straddle a border are intersected with the cells they touch. Large
polygons (observation coverage) go the other way: cells wholly inside are covered whole,
only the cells on the polygon's edge are intersected. Areas are
measured in the Lambert azimuthal equal-area projection of the WGS84 ellipsoid (EPSG:6931
north, EPSG:6932 south), i.e. true ellipsoidal areas.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # heavy libraries are imported where they are used
    import geopandas as gpd
    import shapely

#: Cell edges are densified to this spacing (degrees) before projecting, so their shape in the
#: equal-area projection stays the lon/lat polygon they are.
CELL_SEGMENT_DEG = 0.01


def equal_area_crs(frame: gpd.GeoDataFrame | gpd.GeoSeries) -> str:
    """Choose the equal-area projection for the data's hemisphere.

    Parameters
    ----------
    frame : geopandas.GeoDataFrame or geopandas.GeoSeries
        Geometries in a lon/lat CRS.

    Returns
    -------
    str
        ``"EPSG:6931"`` (LAEA north) if the data reach the northern hemisphere (northern bound
        >= 0), else ``"EPSG:6932"`` (LAEA south).
    """
    return "EPSG:6931" if frame.total_bounds[3] >= 0 else "EPSG:6932"


@dataclass(frozen=True)
class CellOverlay:
    """Polygon-cell intersections with their areas, and the cell owning each polygon.

    Attributes
    ----------
    polygon : numpy.ndarray
        Position of the polygon of each intersection.
    cell : numpy.ndarray
        Position of the cell of each intersection.
    area_km2 : numpy.ndarray
        Area of each intersection (km^2, > 0).
    owner : numpy.ndarray
        Per polygon, the position of the cell holding its representative point (-1 where no
        cell holds it).
    """

    polygon: np.ndarray
    cell: np.ndarray
    area_km2: np.ndarray
    owner: np.ndarray


def overlay_cells(
    polygons: gpd.GeoSeries,
    cells: gpd.GeoSeries,
    areas_km2: np.ndarray | None = None,
    workers: int | None = None,
) -> CellOverlay:
    """Compute the exact intersection areas of polygons with grid cells.

    Parameters
    ----------
    polygons : geopandas.GeoSeries
        Polygons in EPSG:4326, referred to by position.
    cells : geopandas.GeoSeries
        Cells in EPSG:4326, referred to by position.
    areas_km2 : numpy.ndarray, optional
        The polygons' own areas in the same equal-area CRS, where already known (DARTS
        footprints carry ``area_m2``): a polygon inside one cell takes it without reprojection.
    workers : int, optional
        The polygons are split into this many chunks (default: one per CPU) processed in
        threads; shapely and pyproj release the GIL in their vectorised calls.

    Returns
    -------
    CellOverlay
        Intersections with a positive area and each polygon's owner cell.

    Raises
    ------
    ValueError
        If ``polygons`` or ``cells`` has no CRS.
    """
    if polygons.crs is None or cells.crs is None:
        raise ValueError("polygons and cells need a CRS (EPSG:4326)")
    workers = workers or os.cpu_count() or 1
    bounds = np.linspace(0, len(polygons), workers + 1).astype(int)
    chunks = [slice(a, b) for a, b in pairwise(bounds) if b > a]

    def run(chunk: slice) -> CellOverlay:
        known = None if areas_km2 is None else np.asarray(areas_km2)[chunk]
        return _overlay_chunk(polygons.iloc[chunk], cells, known)

    if len(chunks) <= 1:
        return run(slice(0, len(polygons)))
    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(run, chunks))
    return CellOverlay(
        polygon=np.concatenate([p.polygon + c.start for p, c in zip(parts, chunks, strict=True)]),
        cell=np.concatenate([p.cell for p in parts]),
        area_km2=np.concatenate([p.area_km2 for p in parts]),
        owner=np.concatenate([p.owner for p in parts]),
    )


def _overlay_chunk(
    polygons: gpd.GeoSeries, cells: gpd.GeoSeries, areas_km2: np.ndarray | None
) -> CellOverlay:
    import geopandas as gpd
    import shapely

    polys, cell_geoms = polygons.to_numpy(), cells.to_numpy()
    owner = np.full(len(polys), -1, dtype=np.int64)
    if len(polys) == 0:
        empty = np.array([], dtype=np.int64)
        return CellOverlay(empty, empty, np.array([]), owner)
    crs = equal_area_crs(cells)
    # Cells are the query geometries so that GEOS prepares them (fast containment tests).
    in_cell, in_poly = shapely.STRtree(polys).query(cell_geoms, predicate="contains_properly")
    rest = np.setdiff1d(np.arange(len(polys)), in_poly)
    cut_cell, cut_poly = shapely.STRtree(polys[rest]).query(cell_geoms, predicate="intersects")
    cut_poly = rest[cut_poly]

    # Whole polygons need their own area only; cut ones are intersected in the projection.
    needed = rest if areas_km2 is not None else np.arange(len(polys))
    projected = np.empty(len(polys), dtype=object)
    projected[needed] = gpd.GeoSeries(polys[needed], crs=polygons.crs).to_crs(crs).to_numpy()
    if areas_km2 is None:
        whole = shapely.area(projected[in_poly]) / 1e6
    else:
        whole = areas_km2[in_poly]
    owner[in_poly] = in_cell

    cut = np.array([])
    if len(cut_poly):
        needed = np.unique(cut_cell)
        cell_projected = np.empty(len(cell_geoms), dtype=object)
        cell_projected[needed] = (
            gpd.GeoSeries(cell_geoms[needed], crs=cells.crs)
            .segmentize(CELL_SEGMENT_DEG)
            .to_crs(crs)
            .to_numpy()
        )
        pieces = shapely.intersection(projected[cut_poly], cell_projected[cut_cell])
        cut = shapely.area(pieces) / 1e6
        # The representative point of a straddling polygon goes to the touched cell holding
        # it; a point on a shared border goes to the lower position, deterministically.
        holds = shapely.intersects(shapely.point_on_surface(polys[cut_poly]), cell_geoms[cut_cell])
        first = np.full(len(polys), len(cell_geoms), dtype=np.int64)
        np.minimum.at(first, cut_poly[holds], cut_cell[holds])
        owner = np.where(first < len(cell_geoms), first, owner)
    polygon = np.concatenate([in_poly, cut_poly])
    cell = np.concatenate([in_cell, cut_cell])
    area = np.concatenate([whole, cut])
    keep = area > 0
    return CellOverlay(polygon[keep], cell[keep], area[keep], owner)


def cell_areas_km2(cells: gpd.GeoSeries) -> np.ndarray:
    """Measure cells on the WGS84 ellipsoid (edges densified, then the equal-area projection).

    Parameters
    ----------
    cells : geopandas.GeoSeries
        Cells (or any polygons) in EPSG:4326.

    Returns
    -------
    numpy.ndarray
        Area of each cell in km^2.
    """
    projected = cells.segmentize(CELL_SEGMENT_DEG).to_crs(equal_area_crs(cells))
    return projected.area.to_numpy() / 1e6


def covered_area_km2(
    cover: shapely.Geometry | None, cells: gpd.GeoSeries, cell_areas: np.ndarray | None = None
) -> np.ndarray:
    """Compute the exact area of each cell that one large polygon covers.

    A cell wholly inside ``cover`` is covered by its whole area; a cell on the edge of
    ``cover`` is intersected with it in lon/lat (both outlines are lon/lat polygons) and the
    piece measured as :func:`cell_areas_km2` measures cells.

    Parameters
    ----------
    cover : shapely.Geometry or None
        A (multi)polygon in the CRS of ``cells`` (EPSG:4326), e.g. a year's imaged area;
        None covers nothing.
    cells : geopandas.GeoSeries
        Cells in EPSG:4326, referred to by position.
    cell_areas : numpy.ndarray, optional
        The cells' areas from :func:`cell_areas_km2`, where already known.

    Returns
    -------
    numpy.ndarray
        Covered area of each cell in km^2 (0 where ``cover`` misses it).
    """
    import geopandas as gpd
    import shapely

    geoms = cells.to_numpy()
    covered = np.zeros(len(geoms))
    if cover is None or shapely.is_empty(cover) or not len(geoms):
        return covered
    shapely.prepare(cover)
    inside = shapely.contains_properly(cover, geoms)
    edge = np.flatnonzero(~inside & shapely.intersects(cover, geoms))
    if cell_areas is None:
        cell_areas = np.zeros(len(geoms))
        needed = np.flatnonzero(inside)
        cell_areas[needed] = cell_areas_km2(cells.iloc[needed])
    covered[inside] = cell_areas[inside]
    if len(edge):
        pieces = gpd.GeoSeries(shapely.intersection(geoms[edge], cover), crs=cells.crs)
        covered[edge] = cell_areas_km2(pieces)
    return covered
