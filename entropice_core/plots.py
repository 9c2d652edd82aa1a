"""Small PNG previews (maps of cell values such as the land fraction, raster thumbnails) for
metadata and reports.

matplotlib is imported inside the functions: the previews are drawn only when a value is built.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd

#: Above this many cells a map draws points instead of polygons (Arctic-wide levels: ~10^6).
MAP_MAX_POLYGONS = 50_000


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def land_fraction_png(cells: gpd.GeoDataFrame, title: str) -> bytes:
    """A 4.5 x 4 inch PNG of the cells coloured by ``land_fraction``."""
    return cell_values_png(cells, cells["land_fraction"].to_numpy(), title, (0, 1), "YlGn")


def cell_values_png(
    cells: gpd.GeoDataFrame,
    values: np.ndarray,
    title: str,
    limits: tuple[float, float] | None = None,
    cmap: str = "viridis",
) -> bytes:
    """A 4.5 x 4 inch PNG of the cells coloured by ``values`` (one per row; NaN left blank)."""
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
    """A PNG of a 2-D array (colour scale up to its 99th percentile)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4), dpi=80, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values, cmap="magma", vmin=0, vmax=np.nanpercentile(values, 99))
    figure.colorbar(image, ax=ax)
    ax.set_title(title)
    ax.set_axis_off()
    return _png(figure)
