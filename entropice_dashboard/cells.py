"""Cells as polygons in the polar projection (EPSG:3413), and coarser parents for big maps.

The vertices come from ``entropice_core.spatial.grids.cell_rings`` (H3 and HEALPix alike) and
are projected vertex by vertex: a cell across the antimeridian is one polygon in EPSG:3413.
A map of ~10^6 cells is too much for a browser; :func:`display_level` picks the finest level
whose cells in view stay under a budget and :func:`coarsen` averages the values per parent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from entropice_core.config import GridSpec
from entropice_core.spatial.grids import cell_rings, parent_cells

if TYPE_CHECKING:
    import pandas as pd

#: The polar stereographic projection of the maps (NSIDC north, as ArcticDEM).
MAP_CRS = "EPSG:3413"
#: Polygons a map draws at most by default (a browser draws ~10^5 patches in a few seconds).
MAX_POLYGONS = 30_000


def cell_label(spec: GridSpec, ids: np.ndarray) -> np.ndarray:
    """Return the grid's string form of cell ids (H3: hex index; HEALPix: ``level/nested``).

    Parameters
    ----------
    spec : GridSpec
        Grid and level of ``ids``.
    ids : numpy.ndarray
        uint64 cell ids.

    Returns
    -------
    numpy.ndarray
        Object array of strings.
    """
    ids = np.asarray(ids, dtype=np.uint64)
    if spec.grid == "h3":
        return np.array([format(int(i), "x") for i in ids.tolist()], dtype=object)
    return np.array([f"healpix {spec.level}/{int(i)}" for i in ids.tolist()], dtype=object)


def polygons_3413(spec: GridSpec, ids: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return the cells' rings projected to EPSG:3413, as Bokeh ``patches`` wants them.

    Parameters
    ----------
    spec : GridSpec
        Grid and level of ``ids``.
    ids : numpy.ndarray
        uint64 cell ids.

    Returns
    -------
    tuple of (list of numpy.ndarray, list of numpy.ndarray)
        ``xs`` and ``ys`` in metres, one array per cell, in the order of ``ids``.
    """
    from pyproj import Transformer

    ids = np.asarray(ids, dtype=np.uint64)
    transformer = Transformer.from_crs("EPSG:4326", MAP_CRS, always_xy=True)
    xs: list[np.ndarray] = [np.empty(0)] * len(ids)
    ys: list[np.ndarray] = [np.empty(0)] * len(ids)
    for positions, lon, lat in cell_rings(spec, ids):
        x, y = transformer.transform(lon, lat)
        x = np.round(np.asarray(x), 0)
        y = np.round(np.asarray(y), 0)
        for row, position in enumerate(positions.tolist()):
            xs[position] = x[row]
            ys[position] = y[row]
    return xs, ys


def display_level(spec: GridSpec, ids: np.ndarray, max_polygons: int = MAX_POLYGONS) -> int:
    """Return the finest level at which ``ids`` have at most ``max_polygons`` distinct parents.

    Parameters
    ----------
    spec : GridSpec
        Grid and level of ``ids``.
    ids : numpy.ndarray
        The cells in view.
    max_polygons : int, optional
        Budget of polygons.

    Returns
    -------
    int
        A level between 0 and ``spec.level`` (``spec.level`` when the cells fit).
    """
    if len(ids) <= max_polygons:
        return spec.level
    # each level up divides the count by ~7 (H3) or 4 (HEALPix): start from that estimate
    ratio = 7.0 if spec.grid == "h3" else 4.0
    level = spec.level - int(np.ceil(np.log(len(ids) / max_polygons) / np.log(ratio)))
    level = max(level, 0)
    while level > 0 and len(np.unique(parent_cells(spec, ids, level))) > max_polygons:
        level -= 1
    return level


def coarsen(
    spec: GridSpec, frame: pd.DataFrame, level: int, mean: list[str], mode: list[str]
) -> pd.DataFrame:
    """Aggregate per-cell values to the cells' parents at ``level``.

    Parameters
    ----------
    spec : GridSpec
        Grid and level of ``frame["cell_id"]``.
    frame : pandas.DataFrame
        One row per cell with ``cell_id``.
    level : int
        Level of the parents.
    mean : list of str
        Columns averaged per parent (NaN skipped).
    mode : list of str
        Columns whose most frequent value per parent is kept.

    Returns
    -------
    pandas.DataFrame
        One row per parent: ``cell_id`` (the parent's id), the columns and ``cells`` (how many
        cells it holds).
    """
    import pandas as pd

    if level == spec.level:
        out = frame[["cell_id", *mean, *mode]].copy()
        out["cells"] = 1
        return out
    parents = parent_cells(spec, frame["cell_id"].to_numpy(np.uint64), level)
    grouped = frame[[*mean, *mode]].assign(cell_id=parents).groupby("cell_id", sort=True)
    out = grouped[mean].mean() if mean else pd.DataFrame(index=grouped.size().index)
    for column in mode:  # the most frequent value per parent, without a Python loop
        counts = (
            frame[[column]].assign(cell_id=parents).groupby(["cell_id", column], observed=True)
        ).size()
        top = counts.sort_values(kind="stable").groupby(level=0).tail(1)
        values = pd.Series(top.index.get_level_values(1), index=top.index.get_level_values(0))
        out[column] = values.reindex(out.index)
    out["cells"] = grouped.size()
    return out.reset_index()
