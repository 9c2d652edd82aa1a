"""Small PNG previews (cell maps, raster thumbnails) for metadata and reports.

matplotlib is imported inside the functions: the previews are drawn only when a value is built.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

#: Above this many cells a map draws points instead of polygons (Arctic-wide levels: ~10^6).
MAP_MAX_POLYGONS = 50_000


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def land_fraction_png(cells: gpd.GeoDataFrame, title: str) -> bytes:
    """Draw a 4.5 x 4 inch PNG of the cells coloured by ``land_fraction``.

    Parameters
    ----------
    cells : geopandas.GeoDataFrame
        Grid cells with ``land_fraction``; above :data:`MAP_MAX_POLYGONS` cells they are drawn
        as points.
    title : str
        Title of the map.

    Returns
    -------
    bytes
        The PNG.
    """
    return cell_values_png(cells, cells["land_fraction"].to_numpy(), title, (0, 1), "YlGn")


def cell_values_png(
    cells: gpd.GeoDataFrame,
    values: np.ndarray,
    title: str,
    limits: tuple[float, float] | None = None,
    cmap: str = "viridis",
) -> bytes:
    """Draw a 4.5 x 4 inch PNG of the cells coloured by ``values``.

    Parameters
    ----------
    cells : geopandas.GeoDataFrame
        Grid cells; above :data:`MAP_MAX_POLYGONS` cells they are drawn as points.
    values : numpy.ndarray
        One value per row of ``cells``; NaN is left blank.
    title : str
        Title of the map.
    limits : tuple of float, optional
        Colour scale limits; default: the values' range.
    cmap : str, default "viridis"
        Matplotlib colour map.

    Returns
    -------
    bytes
        The PNG.
    """
    from matplotlib.figure import Figure

    style = {"linewidth": 0.2, "edgecolor": "grey"}
    if len(cells) > MAP_MAX_POLYGONS:
        cells = cells.set_geometry(cells.representative_point())
        style = {"markersize": 1, "linewidth": 0}
    vmin, vmax = limits if limits is not None else (None, None)
    figure = Figure(figsize=(4.5, 4), dpi=80, layout="constrained")
    ax = figure.subplots()
    frame = cells[["geometry"]].assign(value=np.asarray(values, dtype=float))
    frame.plot(column="value", ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, legend=True, **style)
    ax.set_title(title)
    return _png(figure)


def raster_png(values: np.ndarray, title: str) -> bytes:
    """Draw a PNG of a 2-D array (colour scale up to its 99th percentile).

    Parameters
    ----------
    values : numpy.ndarray
        The 2-D array; NaN is ignored by the colour scale.
    title : str
        Title of the image.

    Returns
    -------
    bytes
        The PNG.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4), dpi=80, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values, cmap="magma", vmin=0, vmax=np.nanpercentile(values, 99))
    figure.colorbar(image, ax=ax)
    ax.set_title(title)
    ax.set_axis_off()
    return _png(figure)


def leaderboard_png(summary: pd.DataFrame, metric: str = "f1_macro") -> bytes:
    """Draw the experiments' CV ``metric`` (mean and fold std) per grid level as bars.

    Parameters
    ----------
    summary : pandas.DataFrame
        The experiment summary (``entropice_core.ml.summary``), with ``cv_<metric>``,
        ``cv_<metric>_std`` and ``baseline_cv_<metric>`` columns.
    metric : str, optional
        The metric drawn.

    Returns
    -------
    bytes
        The PNG: one panel per grid level, bars sorted best first, the majority baseline as a
        red tick.
    """
    from matplotlib.figure import Figure

    levels = sorted(summary["grid_level"].unique())
    tallest = max(int((summary["grid_level"] == level).sum()) for level in levels)
    figure = Figure(figsize=(5.5 * len(levels), 1.2 + 0.28 * tallest), dpi=80, layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(levels), sharex=True))
    for ax, level in zip(axes, levels, strict=True):
        rows = summary[summary["grid_level"] == level].sort_values(f"cv_{metric}")
        y = np.arange(len(rows))
        ax.barh(y, rows[f"cv_{metric}"], xerr=rows[f"cv_{metric}_std"], color="tab:blue")
        ax.plot(rows[f"baseline_cv_{metric}"], y, "|", color="tab:red", markersize=12)
        ax.set_yticks(y, rows["experiment"])
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"CV {metric}, mean ± fold std (red: majority class)")
        ax.set_title(level)
    return _png(figure)
