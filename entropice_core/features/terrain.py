"""Terrain features: per-cell statistics of elevation and every terrain derivative.

The derivative rasters come from ``entropice_core.ingest.arcticdem.terrain_rasters`` (stored by
the ``terrain_derivatives`` asset); this module reduces them onto the cells of one grid level,
the terrain counterpart of ``entropice_core.features.climate``. See docs/terrain.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from entropice_core.config import Device, GridSpec
from entropice_core.spatial.aggregators import STATISTICS, AggregationConfig, aggregate_raster
from entropice_core.spatial.levels import LevelMap, aggregate_levels
from entropice_core.terrain.overviews import GROUP, pixel_sample, sample_stride, stored_sample

#: Per-cell statistics of every terrain variable (mean, spread, extremes and quartiles).
TERRAIN_STATISTICS = AggregationConfig(
    statistics=("mean", "std", "min", "max", "median", "quantile", "valid_fraction"),
    quantiles=(0.25, 0.75),
)


#: Derivatives kept out of the per-cell statistics: the mean of a circular angle is
#: meaningless (northness and eastness carry the aspect).
NOT_AGGREGATED = ("aspect",)


#: A sample size per cell for the explicit sampled option: 2,500 pixels (a 50 x 50 grid), which
#: estimates a cell's mean to about ``1 / sqrt(n)`` = 2 % of its spread. The default is 0, every
#: pixel (exact), computed for all grid levels in one pass (:func:`derivative_features_levels`).
SAMPLE_PIXELS_PER_CELL = 2500


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
    min_pixels_per_cell: int = 0,
    parallel: bool = False,
    overviews: xr.Dataset | None = None,
) -> xr.Dataset:
    """Compute per-cell statistics of elevation and each derivative on one grid level.

    By default (``min_pixels_per_cell=0``) every pixel counts (exact): moments weighted by
    each pixel's exact coverage of the cell, quantiles over the pixels whose centre lies in
    the cell (``spatial.levels.aggregate_levels``, docs/aggregation.md). Above 0 (an explicit
    option, e.g. :data:`SAMPLE_PIXELS_PER_CELL`) the statistics are taken over a regular
    sample: every ``stride``-th pixel in each direction (the centre of each ``stride x
    stride`` block), the stride (from ``terrain.overviews.SAMPLE_STRIDES``) chosen so that a
    cell of median size keeps at least that many pixels, read from ``overviews`` where they
    hold it; the attrs then give the sample size and the expected error of the means
    (:func:`sampling_error`).

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
        0 (default): every pixel, exact. Else the sample size per cell of median area, see
        :func:`pixel_stride`.
    parallel : bool, optional
        Sampled path: run the blocks as dask tasks on the current scheduler.
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
    dx, dy = (abs(v) for v in rasters.rio.resolution())
    stride = pixel_stride(cells, dx, dy, min_pixels_per_cell)
    if stride == 1:
        return terrain_features_levels(rasters, {spec.key: cells}, statistics)[spec.key]
    crs = rasters.rio.crs
    stored = stored_sample(overviews, stride) if overviews is not None else None
    if stored is None and not rasters.chunks:
        # lazily indexed (io.assets.load_dataset): sampled block by block, not all at once
        rasters = rasters.chunk({rasters.rio.y_dim: 1024, rasters.rio.x_dim: 1024})
    rasters = stored if stored is not None else pixel_sample(rasters, stride)
    names = [str(v) for v in rasters.data_vars if v not in NOT_AGGREGATED]
    stack = rasters[names].to_dataarray("variable").drop_vars("spatial_ref", errors="ignore")
    stack = stack.rio.write_crs(crs).rio.write_nodata(np.nan, encoded=False)
    stacked = aggregate_raster(
        xr.Dataset({"terrain": stack}), cells, spec, statistics, parallel=parallel
    )
    features = xr.Dataset(coords={"cell_ids": stacked["cell_ids"]}, attrs=stacked.attrs)
    for key, values in stacked.data_vars.items():
        stat = str(key).removeprefix("terrain_")
        for name in names:
            features[f"{name}_{stat}"] = values.sel(variable=name, drop=True)
    sample = sample_pixels(cells, dx * stride, dy * stride)
    return _finish(
        features,
        rasters,
        names,
        pixel_stride=stride,
        exact=0,
        sample_pixels_per_cell=sample,
        expected_error_of_mean=sampling_error(sample),
    )


def sample_pixels(cells: gpd.GeoDataFrame, dx: float, dy: float) -> int:
    """Return the pixels of size ``dx`` x ``dy`` (m) in a cell of median area (EPSG:6931)."""
    if cells.empty:
        return 0
    return int(float(cells.geometry.to_crs("EPSG:6931").area.median()) / (dx * dy))


def sampling_error(pixels: int) -> float:
    """Return the expected error of a sampled cell mean, in units of the cell's std.

    The standard error of the mean of ``pixels`` independent draws, ``1 / sqrt(pixels)``;
    a regular grid sample of spatially correlated values usually does better.

    Parameters
    ----------
    pixels : int
        Sampled pixels per cell.

    Returns
    -------
    float
        ``1 / sqrt(pixels)`` (NaN for no pixels).
    """
    return float(1 / np.sqrt(pixels)) if pixels > 0 else float("nan")


def terrain_features_levels(
    rasters: xr.Dataset,
    levels: Mapping[str, gpd.GeoDataFrame],
    statistics: AggregationConfig = TERRAIN_STATISTICS,
    level_map: LevelMap | None = None,
    device: Device = "cpu",
) -> dict[str, xr.Dataset]:
    """Compute exact :func:`terrain_features` on several grid levels in one pass.

    Each variable is read once and reduced on every level (``spatial.levels``): the cost of
    all nine levels is close to that of one.

    Parameters
    ----------
    rasters : xarray.Dataset
        Elevation and derivatives with a CRS; ``aspect`` is skipped.
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key (``GridSpec.key``) to its cells.
    statistics : AggregationConfig, optional
        The statistics per variable.
    level_map : LevelMap, optional
        Atoms built earlier for this raster grid and these levels
        (``spatial.levels.build_level_map``).
    device : {"cpu", "cuda"}, optional
        Where the bands are reduced (``cuda``: on the GPU with cupy, the ``gpu`` extra).

    Returns
    -------
    dict of str to xarray.Dataset
        Per level key, the features as :func:`terrain_features` returns them.
    """
    if "spatial_ref" in rasters.data_vars:  # as read back from Zarr
        rasters = rasters.set_coords("spatial_ref")
    names = [str(v) for v in rasters.data_vars if v not in NOT_AGGREGATED]
    found = aggregate_levels(rasters[names], levels, statistics, level_map=level_map, device=device)
    return {
        key: _finish(features, rasters, names, pixel_stride=1, exact=1)
        for key, features in found.items()
    }


def _finish(
    features: xr.Dataset, rasters: xr.Dataset, names: list[str], **attrs: Any
) -> xr.Dataset:
    """Add units and the source attrs to per-cell features."""
    for name in names:
        for stat in STATISTICS:
            key = f"{name}_{stat}"
            if key in features and stat != "valid_fraction":
                features[key].attrs["units"] = rasters[name].attrs.get("units", "")
    features.attrs.update(source="ArcticDEM v4.1 32 m mosaic", **attrs)
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


def derivative_features_levels(
    derivatives: xr.DataTree,
    levels: Mapping[str, gpd.GeoDataFrame],
    min_pixels_per_cell: int = 0,
    parallel: bool = False,
    device: Device = "cpu",
) -> dict[str, xr.Dataset]:
    """Compute the features of the stored derivatives on several grid levels.

    Exact (the default) in one pass over the rasters for all levels
    (:func:`terrain_features_levels`); with a sample size, level by level from the overviews
    (:func:`derivative_features`).

    Parameters
    ----------
    derivatives : xarray.DataTree
        The derivatives as :func:`derivative_features` takes them.
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key to its cells.
    min_pixels_per_cell : int, optional
        0 (default): every pixel, exact. Else the sample size per cell of median area.
    parallel : bool, optional
        Sampled path: run the blocks as dask tasks on the current scheduler.
    device : {"cpu", "cuda"}, optional
        Exact path: where the bands are reduced (:func:`terrain_features_levels`).

    Returns
    -------
    dict of str to xarray.Dataset
        Per level key, the features with the derivatives' snapshot id in their attrs.
    """
    if min_pixels_per_cell > 0:
        return {
            key: derivative_features(
                derivatives,
                cells,
                GridSpec.from_key(key),
                parallel=parallel,
                min_pixels_per_cell=min_pixels_per_cell,
            )
            for key, cells in levels.items()
        }
    found = terrain_features_levels(derivatives.to_dataset(), levels, device=device)
    for features in found.values():
        features.attrs["derivatives_snapshot_id"] = derivatives.attrs["icechunk_snapshot_id"]
    return found


def feature_summary(features: xr.Dataset) -> dict[str, object]:
    """Summarise a terrain_features dataset for reports and metadata: counts, domain means.

    Parameters
    ----------
    features : xarray.Dataset
        A terrain_features dataset (:func:`terrain_features`).

    Returns
    -------
    dict
        Snapshot id, pixel stride, whether every pixel counted (else the sample size and
        expected error of the means), variable and cell counts, cells with data and the mean
        elevation and slope (None where no cell has data).
    """
    means = features["elevation_mean"].to_numpy()
    finite = np.isfinite(means)
    return {
        "derivatives_snapshot_id": features.attrs.get("derivatives_snapshot_id"),
        "pixel_stride": int(features.attrs["pixel_stride"]),
        "exact": bool(features.attrs.get("exact", features.attrs["pixel_stride"] == 1)),
        **{
            key: features.attrs[key]
            for key in ("sample_pixels_per_cell", "expected_error_of_mean")
            if key in features.attrs
        },
        "variables": len(features.data_vars),
        "cells": int(features.sizes["cell_ids"]),
        "cells_with_data": int(finite.sum()),
        "mean_elevation_m": round(float(means[finite].mean()), 1) if finite.any() else None,
        "mean_slope_deg": round(float(np.nanmean(features["slope_mean"])), 2)
        if finite.any()
        else None,
    }
