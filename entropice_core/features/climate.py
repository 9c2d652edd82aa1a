"""Climate indices per Arctic year on the ERA5 grid, and their per-cell aggregates (L2).

The indices of one year are computed from that year's daily store plus, where it exists, the
next year's October-December (thaw season end, SON, autumn shoulder), in latitude bands so that
memory stays a few hundred MB for the whole Arctic box. Per-cell features are area-weighted
means of each index over the 0.25 degree pixels with the aggregation engine (exact cell
coverage, true pixel areas, 180 degree wrap).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from entropice_core.climate.indices import ClimateIndexConfig, yearly_indices
from entropice_core.config import GridSpec
from entropice_core.ingest.era5 import GRID_STEP, crop_to_area, read_daily
from entropice_core.spatial.aggregators import AggregationConfig, aggregate_raster
from entropice_core.spatial.pixelmap import RasterGrid, build_cell_pixel_map

#: Latitude rows per band: 20 rows of the Arctic box are ~15 months x 20 x 1440 x 6 float32.
BAND_ROWS = 20


def yearly_from_daily(
    daily: xr.Dataset,
    next_daily: xr.Dataset | None,
    year: int,
    config: ClimateIndexConfig = ClimateIndexConfig(),
    band_rows: int = BAND_ROWS,
) -> xr.Dataset:
    """Compute the indices of Arctic year ``year`` on the daily grid, band by band.

    Parameters
    ----------
    daily : xarray.Dataset
        The year's daily variables (an era5_daily store).
    next_daily : xarray.Dataset or None
        The next year's daily variables; its days before 1 January ``year + 1`` complete the
        thaw season, SON and the autumn shoulder. None where that year is not there yet.
    year : int
        Arctic year.
    config : ClimateIndexConfig, optional
        Snow threshold and shoulder length.
    band_rows : int, optional
        Latitude rows loaded and computed at once (bounds memory).

    Returns
    -------
    xarray.Dataset
        The indices ``(year, latitude, longitude)``; attrs ``arctic_year`` and
        ``thaw_season_complete`` (whether ``next_daily`` was given).
    """
    if next_daily is not None:
        tail = next_daily.sel(time=next_daily["time"] < np.datetime64(f"{year + 1}-01-01", "ns"))
        daily = xr.concat([daily, tail], dim="time", join="exact")
    bands = [
        yearly_indices(daily.isel(latitude=slice(i, i + band_rows)).load(), year, config)
        for i in range(0, daily.sizes["latitude"], band_rows)
    ]
    out = xr.concat(bands, dim="latitude")
    out.attrs.update(arctic_year=year, thaw_season_complete=next_daily is not None)
    return out


def yearly_from_stores(
    daily_path: Path,
    next_daily_path: Path | None,
    year: int,
    config: ClimateIndexConfig = ClimateIndexConfig(),
    boxes: Sequence[tuple[float, float, float, float]] | None = None,
) -> xr.Dataset:
    """Compute the indices of Arctic year ``year`` from era5_daily stores.

    Parameters
    ----------
    daily_path : Path
        The year's era5_daily store.
    next_daily_path : Path or None
        The next year's store, which completes the thaw season and SON; used where it
        exists (None, or a path not yet written, leaves the season incomplete).
    year : int
        Arctic year.
    config : ClimateIndexConfig, optional
        Snow threshold and shoulder length.
    boxes : sequence of tuple of float, optional
        Only the grid points of these lon/lat boxes (``era5.crop_to_area``); default: all.

    Returns
    -------
    xarray.Dataset
        The indices, as :func:`yearly_from_daily` returns them.
    """
    daily = read_daily(daily_path)
    following = next_daily_path if next_daily_path and Path(next_daily_path).exists() else None
    next_daily = read_daily(following) if following is not None else None
    if boxes is not None:
        daily = crop_to_area(daily, boxes)
        next_daily = crop_to_area(next_daily, boxes) if next_daily is not None else None
    return yearly_from_daily(daily, next_daily, year, config)


def yearly_summary(indices: xr.Dataset) -> dict[str, Any]:
    """Summarise one year's indices: domain means and the cells whose freeze-up is censored.

    Parameters
    ----------
    indices : xarray.Dataset
        One year's indices (:func:`yearly_from_daily`).

    Returns
    -------
    dict
        ``thaw_season_complete``, ``censored_freeze_up`` (cells that thawed but have no
        freeze-up), ``mean_tdd``, ``mean_fdd`` and ``domain_means`` (a one-column frame).
    """
    summary = indices.isel(year=0).mean(("latitude", "longitude")).to_pandas()
    censored = indices["freeze_up"].isnull() & indices["thaw_onset"].notnull()
    return {
        "thaw_season_complete": bool(indices.attrs.get("thaw_season_complete", False)),
        "censored_freeze_up": int(censored.sum()),
        "mean_tdd": round(float(summary["thawing_degree_days"]), 1),
        "mean_fdd": round(float(summary["freezing_degree_days"]), 1),
        "domain_means": summary.round(2).to_frame("mean"),
    }


def open_yearly(paths: Sequence[Path]) -> xr.Dataset:
    """Open the yearly index stores as one lazy dataset ``(year, latitude, longitude)``.

    Parameters
    ----------
    paths : sequence of Path
        era5_yearly stores, in any order.

    Returns
    -------
    xarray.Dataset
        The stores concatenated along ``year``, sorted by year.

    Raises
    ------
    FileNotFoundError
        If ``paths`` is empty.
    ValueError
        If a store cannot be read.
    """
    if not paths:
        raise FileNotFoundError(
            "no era5_yearly store found: materialise era5_hourly, era5_daily and era5_yearly "
            "for at least one Arctic year first"
        )
    stores = []
    for path in sorted(paths):
        try:
            stores.append(xr.open_zarr(path, consolidated=False, zarr_format=3))
        except Exception as err:
            raise ValueError(
                f"{path} is not a readable Zarr store ({err}); rematerialise it"
            ) from err
    return xr.concat(stores, dim="year", join="exact").sortby("year")


def as_raster(indices: xr.Dataset) -> xr.Dataset:
    """Return the lat/lon grid as a rioxarray raster (EPSG:4326, ``y``/``x``) for the engine.

    Parameters
    ----------
    indices : xarray.Dataset
        Indices on the regular 0.25 degree ERA5 grid, latitude descending.

    Returns
    -------
    xarray.Dataset
        The same data with dims ``(year, y, x)`` and a CRS.

    Raises
    ------
    ValueError
        If the grid is not the regular 0.25 degree one.
    """
    lat, lon = indices["latitude"].to_numpy(), indices["longitude"].to_numpy()
    if not np.allclose(np.diff(lon), GRID_STEP) or not np.allclose(np.diff(lat), -GRID_STEP):
        raise ValueError(
            "ERA5 indices must be on the regular 0.25 degree grid, latitude descending"
        )
    raster = indices.rename(latitude="y", longitude="x").transpose("year", "y", "x")
    return raster.rio.write_crs("EPSG:4326").rio.set_spatial_dims(x_dim="x", y_dim="y")


def climate_features(
    indices: xr.Dataset, cells: gpd.GeoDataFrame, spec: GridSpec, parallel: bool = False
) -> xr.Dataset:
    """Compute area-weighted cell means of every index: an L2 dataset on ``(cell_ids, year)``.

    ``valid_fraction`` (of the cell's area covered by ERA5 pixels with a temperature) comes
    once, from the thawing degree days.

    Parameters
    ----------
    indices : xarray.Dataset
        Yearly indices ``(year, latitude, longitude)`` (:func:`open_yearly`).
    cells : geopandas.GeoDataFrame
        Grid cells of ``spec`` with ``cell_id`` and geometry.
    spec : GridSpec
        Grid and level of the cells.
    parallel : bool, optional
        Run one dask task per block (see aggregate_raster).

    Returns
    -------
    xarray.Dataset
        One variable per index ``(cell_ids, year)`` and ``valid_fraction`` ``(cell_ids)``.
    """
    raster = as_raster(indices)
    cell_map = build_cell_pixel_map(cells, RasterGrid.from_xarray(raster))
    means = aggregate_raster(
        raster,
        cells,
        spec,
        AggregationConfig(statistics=("mean",)),
        cell_map=cell_map,
        parallel=parallel,
    )
    features = means.rename({f"{name}_mean": name for name in indices.data_vars})
    coverage = aggregate_raster(
        raster[["thawing_degree_days"]].isel(year=[0]),
        cells,
        spec,
        AggregationConfig(statistics=("valid_fraction",)),
        cell_map=cell_map,
    )
    features["valid_fraction"] = coverage["thawing_degree_days_valid_fraction"].isel(
        year=0, drop=True
    )
    for name in indices.data_vars:
        features[name].attrs.update(indices[name].attrs)
        features[name] = features[name].transpose("cell_ids", "year")
    features.attrs.update(source="ERA5 single levels, 0.25 degree (Copernicus CDS)")
    return features


def feature_summary(features: xr.Dataset) -> dict[str, Any]:
    """Summarise a climate_features dataset: counts and the mean thawing degree days.

    Parameters
    ----------
    features : xarray.Dataset
        A climate_features dataset (:func:`climate_features`).

    Returns
    -------
    dict
        ``cells``, ``years``, ``mean_tdd`` (None where all values are NaN) and
        ``nan_fraction``.
    """
    tdd = features["thawing_degree_days"].to_numpy()
    finite = tdd[np.isfinite(tdd)]
    return {
        "cells": int(features.sizes["cell_ids"]),
        "years": features["year"].to_numpy().tolist(),
        "mean_tdd": round(float(finite.mean()), 1) if finite.size else None,
        "nan_fraction": round(float(np.isnan(tdd).mean()), 4),
    }
