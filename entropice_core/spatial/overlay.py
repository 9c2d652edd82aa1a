"""Exact overlay of small polygons (RTS footprints) with grid cells.

Most footprints (median about 2,000 m^2) lie wholly inside one cell, so a spatial index with a
``within`` predicate settles them without any intersection; only the few that straddle a cell
border are intersected. Areas are measured in the Lambert azimuthal equal-area projection of
the WGS84 ellipsoid (EPSG:6931 north, EPSG:6932 south), i.e. true ellipsoidal areas.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

#: Cell edges are densified to this spacing (degrees) before projecting, so their shape in the
#: equal-area projection stays the lon/lat polygon they are.
CELL_SEGMENT_DEG = 0.01


def equal_area_crs(frame: gpd.GeoDataFrame | gpd.GeoSeries) -> str:
    """EPSG:6931 (LAEA north) for northern data, EPSG:6932 for southern."""
    return "EPSG:6931" if frame.total_bounds[3] >= 0 else "EPSG:6932"


def polygon_cell_areas(polygons: gpd.GeoSeries, cells: gpd.GeoSeries) -> pd.DataFrame:
    """Area of every non-empty polygon-cell intersection.

    Parameters
    ----------
    polygons, cells
        Geometries in EPSG:4326; the positional order defines the returned indices.

    Returns
    -------
    DataFrame with ``polygon`` and ``cell`` (positions) and ``area_km2``.
    """
    if polygons.crs is None or cells.crs is None:
        raise ValueError("polygons and cells need a CRS (EPSG:4326)")
    crs = equal_area_crs(cells)
    polys = polygons.to_numpy()
    tree = shapely.STRtree(cells.to_numpy())
    within_poly, within_cell = tree.query(polys, predicate="within")
    touch_poly, touch_cell = tree.query(polys, predicate="intersects")
    straddles = ~np.isin(touch_poly, within_poly)
    touch_poly, touch_cell = touch_poly[straddles], touch_cell[straddles]

    projected = gpd.GeoSeries(polys, crs=polygons.crs).to_crs(crs).to_numpy()
    whole = shapely.area(projected[within_poly]) / 1e6

    needed = np.unique(touch_cell)
    cell_projected = np.empty(len(cells), dtype=object)
    if needed.size:
        cell_projected[needed] = (
            gpd.GeoSeries(cells.to_numpy()[needed], crs=cells.crs)
            .segmentize(CELL_SEGMENT_DEG)
            .to_crs(crs)
            .to_numpy()
        )
    cut = (
        shapely.area(shapely.intersection(projected[touch_poly], cell_projected[touch_cell])) / 1e6
    )
    result = pd.DataFrame(
        {
            "polygon": np.concatenate([within_poly, touch_poly]),
            "cell": np.concatenate([within_cell, touch_cell]),
            "area_km2": np.concatenate([whole, cut]),
        }
    )
    return result[result.area_km2 > 0].reset_index(drop=True)


def containing_cell(points: np.ndarray, cells: gpd.GeoSeries) -> np.ndarray:
    """Position of the cell holding each point, -1 where none does (outside or on a gap)."""
    tree = shapely.STRtree(cells.to_numpy())
    point_idx, cell_idx = tree.query(points, predicate="intersects")
    owner = np.full(len(points), -1, dtype=np.int64)
    # A point on a shared border touches two cells: the lower position wins, deterministically.
    order = np.lexsort((cell_idx, point_idx))[::-1]
    owner[point_idx[order]] = cell_idx[order]
    return owner
