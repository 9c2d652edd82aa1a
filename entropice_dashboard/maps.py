"""Prepared cell maps: predictions (or any per-cell table) coarsened to fit the browser.

The preparation (reading, parents, polygons in EPSG:3413) is cached on the file's
modification time and the view's settings, so moving between pages or reruns redraws at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from entropice_core.config import GridSpec
from entropice_dashboard.cells import cell_label, coarsen, display_level, polygons_3413

if TYPE_CHECKING:
    import pandas as pd

#: The whole Arctic as the default view (the predictions never go south of it).
WORLD = (-180.0, 180.0, 40.0, 90.0)


@dataclass(frozen=True)
class CellMap:
    """Polygons and values of one map, at the level it is drawn."""

    level: int
    cells: int  # native cells in view
    xs: list[np.ndarray]
    ys: list[np.ndarray]
    data: dict[str, Any]

    @property
    def polygons(self) -> int:
        """Polygons drawn (cells, or parents when coarsened)."""
        return len(self.xs)


@st.cache_data(show_spinner=False, max_entries=4)
def _centres(grid_level: str, _ids: np.ndarray, key: str, mtime_ns: int) -> np.ndarray:
    """(lon, lat) of every cell, cached on the file the ids come from (ids are not hashed)."""
    ids = _ids
    spec = GridSpec.from_key(grid_level)
    if spec.grid == "h3":
        from h3.api import numpy_int as h3_int

        lat_lon = np.array([h3_int.cell_to_latlng(c) for c in ids.tolist()], dtype=float)
        return lat_lon[:, ::-1].reshape(-1, 2)
    import healpix_geo.nested as healpix

    from entropice_core.spatial.grids import HEALPIX_ELLIPSOID

    lon, lat = healpix.healpix_to_lonlat(ids, spec.level, ellipsoid=HEALPIX_ELLIPSOID)
    lon = (np.asarray(lon) + 180.0) % 360.0 - 180.0
    return np.stack([lon, np.asarray(lat)], axis=1)


def in_box(
    grid_level: str, ids: np.ndarray, box: tuple[float, float, float, float], key: str, mtime: int
) -> np.ndarray:
    """Return a mask of the cells whose centre lies in a lon/lat box.

    Parameters
    ----------
    grid_level : str
        Grid_level key of ``ids``.
    ids : numpy.ndarray
        Cell ids.
    box : tuple of float
        ``(min_lon, max_lon, min_lat, max_lat)``; min_lon > max_lon crosses 180 degrees.
    key : str
        The file the ids come from (cache key).
    mtime : int
        Its modification time (cache key).

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    if box == WORLD:
        return np.ones(len(ids), dtype=bool)
    centres = _centres(grid_level, ids, key, mtime)
    lon, lat = centres[:, 0], centres[:, 1]
    min_lon, max_lon, min_lat, max_lat = box
    in_lon = (
        (lon >= min_lon) & (lon <= max_lon)
        if min_lon <= max_lon
        else (lon >= min_lon) | (lon <= max_lon)
    )
    return in_lon & (lat >= min_lat) & (lat <= max_lat)


@st.cache_data(show_spinner=False, max_entries=8)
def cell_map(
    grid_level: str,
    _frame: pd.DataFrame,
    mean: tuple[str, ...],
    mode: tuple[str, ...],
    max_polygons: int,
    key: str,
) -> CellMap:
    """Coarsen a per-cell table to fit ``max_polygons`` and project its polygons.

    Parameters
    ----------
    grid_level : str
        Grid_level key of ``frame["cell_id"]``.
    _frame : pandas.DataFrame
        The cells in view: ``cell_id`` and the value columns (not hashed: see ``key``).
    mean : tuple of str
        Columns averaged over a parent's cells.
    mode : tuple of str
        Columns whose most frequent value a parent shows.
    max_polygons : int
        Budget of polygons.
    key : str
        What the frame is (file, mtime, filters): the cache key, since hashing the frame
        itself would cost as much as a Parquet read.

    Returns
    -------
    CellMap
        Ready for :func:`entropice_dashboard.plots.cell_map`; ``data`` has ``cell`` (the
        grid's string form of the drawn cell or parent) and ``cells`` (cells it holds).
    """
    frame = _frame
    spec = GridSpec.from_key(grid_level)
    ids = frame["cell_id"].to_numpy(np.uint64)
    level = display_level(spec, ids, max_polygons)
    shown = coarsen(spec, frame, level, list(mean), list(mode))
    drawn = GridSpec(grid=spec.grid, level=level)
    shown_ids = shown["cell_id"].to_numpy(np.uint64)
    xs, ys = polygons_3413(drawn, shown_ids)
    data = {column: shown[column].to_numpy() for column in shown.columns if column != "cell_id"}
    data["cell"] = cell_label(drawn, shown_ids)
    for column in mode:  # categories as text (missing: "none")
        import pandas as pd

        data[column] = (
            pd.Series(data[column], dtype=object)
            .astype(str)
            .where(pd.notna(pd.Series(data[column], dtype=object)), "none")
            .to_numpy(dtype=object)
        )
    return CellMap(level, len(frame), xs, ys, data)


def hash_path(path: Path) -> str:
    """Return a cache key of a file: its path and modification time.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    str
        ``path@mtime_ns``.
    """
    return f"{path}@{path.stat().st_mtime_ns}"
