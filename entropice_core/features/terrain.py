"""Terrain features: per-cell statistics of elevation and every terrain derivative.

The derivative rasters come from ``entropice_core.ingest.arcticdem.terrain_rasters`` (stored by
the ``terrain_derivatives`` asset); this module reduces them onto the cells of one grid level,
the terrain counterpart of ``entropice_core.features.climate``. See docs/terrain.md.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from entropice_core.config import GridSpec
from entropice_core.spatial.aggregators import AggregationConfig, aggregate_raster
from entropice_core.terrain.overviews import GROUP, pixel_sample, sample_stride, stored_sample

#: Per-cell statistics of every terrain variable (mean, spread, extremes and quartiles).
TERRAIN_STATISTICS = AggregationConfig(
    statistics=("mean", "std", "min", "max", "median", "quantile", "valid_fraction"),
    quantiles=(0.25, 0.75),
)


#: Derivatives kept out of the per-cell statistics: the mean of a circular angle is
#: meaningless (northness and eastness carry the aspect).
NOT_AGGREGATED = ("aspect",)


#: Default sample size per cell: 2,500 pixels (a 50 x 50 grid) estimate a cell's mean and
#: quartiles to about 2 % of their spread, and make coarse grid levels cheap.
MIN_PIXELS_PER_CELL = 2500


def pixel_stride(cells: gpd.GeoDataFrame, dx: float, dy: float, min_pixels: int) -> int:
    """Return the largest sample stride that leaves a median cell ``min_pixels`` pixels.

    Strides come from ``terrain.overviews.SAMPLE_STRIDES`` (1, 2, 3, 4, 6, 8, ...), the
    strides the stored overviews hold.

    Parameters
    ----------
    cells : geopandas.GeoDataFrame
        The grid cells; their median area is measured in EPSG:6931.
    dx, dy : float
        Pixel size in metres.
    min_pixels : int
        Pixels a cell of median area keeps at least; 0 keeps every pixel.

    Returns
    -------
    int
        The stride; 1 means every pixel (also when ``min_pixels`` is 0 or there are no cells).
    """
    if min_pixels <= 0 or cells.empty:
        return 1
    area = float(cells.geometry.to_crs("EPSG:6931").area.median())
    return sample_stride(int(np.sqrt(area / (min_pixels * dx * dy))))


def terrain_features(
    rasters: xr.Dataset,
    cells: gpd.GeoDataFrame,
    spec: GridSpec,
    statistics: AggregationConfig = TERRAIN_STATISTICS,
    min_pixels_per_cell: int = MIN_PIXELS_PER_CELL,
    parallel: bool = False,
    overviews: xr.Dataset | None = None,
) -> xr.Dataset:
    """Compute per-cell statistics of elevation and each derivative on one grid level.

    Statistics are taken over a regular sample of the pixels: every ``stride``-th pixel in
    each direction (the centre of each ``stride x stride`` block), with the stride (from
    ``terrain.overviews.SAMPLE_STRIDES``) chosen so that a cell of median size keeps at
    least ``min_pixels_per_cell`` pixels (0: every pixel, exact). The sample is read from
    ``overviews`` where they hold the stride (the same pixels, a fraction of the reading).
    The derivatives themselves are always computed at full resolution. All variables are
    read together as bands of one raster, so the cell-pixel map is built once.

    Parameters
    ----------
    rasters : xarray.Dataset
        Elevation and derivatives with a CRS (``terrain_rasters``); ``aspect`` is skipped.
    cells : geopandas.GeoDataFrame
        The cells of the grid level.
    spec : GridSpec
        Grid and level of the cells.
    statistics : AggregationConfig, optional
        The statistics per variable.
    min_pixels_per_cell : int, optional
        Sample size per cell of median area, see :func:`pixel_stride`.
    parallel : bool, optional
        Run the blocks as dask tasks on the current scheduler (see aggregate_raster).
    overviews : xarray.Dataset, optional
        The stored pixel samples of ``rasters`` (``terrain.overviews.overview_pyramid``).

    Returns
    -------
    xarray.Dataset
        An xdggs L2 dataset with ``<variable>_<statistic>`` variables (quartiles along a
        ``quantile`` dim) and the stride in its attrs; see docs/terrain.md.
    """
    if "spatial_ref" in rasters.data_vars:  # as read back from Zarr
        rasters = rasters.set_coords("spatial_ref")
    crs = rasters.rio.crs
    dx, dy = (abs(v) for v in rasters.rio.resolution())
    stride = pixel_stride(cells, dx, dy, min_pixels_per_cell)
    stored = stored_sample(overviews, stride) if overviews is not None else None
    rasters = stored if stored is not None else pixel_sample(rasters, stride)
    names = [v for v in rasters.data_vars if v not in NOT_AGGREGATED]
    stack = rasters[names].to_dataarray("variable").drop_vars("spatial_ref", errors="ignore")
    stack = stack.rio.write_crs(crs).rio.write_nodata(np.nan, encoded=False)
    stacked = aggregate_raster(
        xr.Dataset({"terrain": stack}), cells, spec, statistics, parallel=parallel
    )
    features = xr.Dataset(coords={"cell_ids": stacked["cell_ids"]}, attrs=stacked.attrs)
    for key, values in stacked.data_vars.items():
        stat = str(key).removeprefix("terrain_")
        for name in names:
            variable = values.sel(variable=name, drop=True)
            if stat != "valid_fraction":
                variable.attrs["units"] = rasters[name].attrs.get("units", "")
            features[f"{name}_{stat}"] = variable
    features.attrs.update(source="ArcticDEM v4.1 32 m mosaic", pixel_stride=stride)
    return features


def derivative_features(
    derivatives: xr.DataTree,
    cells: gpd.GeoDataFrame,
    spec: GridSpec,
    parallel: bool = False,
    **options: Any,
) -> xr.Dataset:
    """Compute :func:`terrain_features` from the stored derivatives, recording their version.

    Parameters
    ----------
    derivatives : xarray.DataTree
        The derivatives as ``io.assets.load_dataset`` reads them: the rasters at the root
        (with ``attrs["icechunk_snapshot_id"]``) and, where stored, the overviews in the
        child ``overviews``.
    cells : geopandas.GeoDataFrame
        The cells of the grid level.
    spec : GridSpec
        Grid and level of the cells.
    parallel : bool, optional
        Run the blocks as dask tasks on the current scheduler.
    **options : Any
        Further arguments of :func:`terrain_features` (``min_pixels_per_cell``, ...).

    Returns
    -------
    xarray.Dataset
        The features, with the derivatives' snapshot id in
        ``attrs["derivatives_snapshot_id"]`` (so a model trained on them names the exact
        version).
    """
    overviews = derivatives.children.get(GROUP)
    features = terrain_features(
        derivatives.to_dataset(),
        cells,
        spec,
        parallel=parallel,
        overviews=overviews.to_dataset(inherit=False) if overviews is not None else None,
        **options,
    )
    features.attrs["derivatives_snapshot_id"] = derivatives.attrs["icechunk_snapshot_id"]
    return features


def feature_summary(features: xr.Dataset) -> dict[str, object]:
    """Summarise a terrain_features dataset for reports and metadata: counts, domain means.

    Parameters
    ----------
    features : xarray.Dataset
        A terrain_features dataset (:func:`terrain_features`).

    Returns
    -------
    dict
        Snapshot id, pixel stride, variable and cell counts, cells with data and the mean
        elevation and slope (None where no cell has data).
    """
    means = features["elevation_mean"].to_numpy()
    finite = np.isfinite(means)
    return {
        "derivatives_snapshot_id": features.attrs.get("derivatives_snapshot_id"),
        "pixel_stride": int(features.attrs["pixel_stride"]),
        "variables": len(features.data_vars),
        "cells": int(features.sizes["cell_ids"]),
        "cells_with_data": int(finite.sum()),
        "mean_elevation_m": round(float(means[finite].mean()), 1) if finite.any() else None,
        "mean_slope_deg": round(float(np.nanmean(features["slope_mean"])), 2)
        if finite.any()
        else None,
    }
