"""Per-cell AlphaEarth embeddings of one grid level, with summary and first principal component.

The call the asset and the CLI share, and the summary and map their reports show.

The embeddings come from a client of :mod:`entropice_core.ingest.alphaearth` (Earth Engine, or
the COGs with the cluster cache); this module only picks the years and summarises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import xarray as xr

from entropice_core.config import GridSpec
from entropice_core.ingest.alphaearth import BANDS, EmbeddingClient, EmbeddingResult


def alphaearth_features(
    client: EmbeddingClient, cells: gpd.GeoDataFrame, spec: GridSpec, years: Sequence[int]
) -> EmbeddingResult:
    """Fetch the L2 dataset of ``cells`` for ``years`` (sorted, each once) and what it cost.

    Every year is requested per cluster and cached on its own (with a cached client), so a
    year added to ``years`` costs only that year's requests.

    Parameters
    ----------
    client : EmbeddingClient
        Where the embeddings come from (Earth Engine, or the COGs).
    cells : geopandas.GeoDataFrame
        A ``grid_cells`` frame: cell_id, EPSG:4326 geometry.
    spec : GridSpec
        Grid and level of the cells.
    years : sequence of int
        The years to fetch (at least one).

    Returns
    -------
    EmbeddingResult
        The dataset (dims cell_ids, year) and the request and cache counts.

    Raises
    ------
    ValueError
        If ``years`` is empty.
    """
    if not years:
        raise ValueError("no AlphaEarth year to fetch: give at least one year (2017 onward)")
    return client.embeddings(cells, spec, sorted({int(y) for y in years}))


def first_component(ds: xr.Dataset) -> xr.DataArray:
    """Score every cell and year on the first principal component of the embeddings.

    Fitted on every (cell, year) with data (centred, not scaled: the axes share one unit);
    NaN where a cell has no valid pixel. The sign is fixed so that the largest loading is
    positive, so maps of two runs compare.

    Parameters
    ----------
    ds : xarray.Dataset
        An alphaearth_features dataset (``A00``..``A63`` on ``(cell_ids, year)``).

    Returns
    -------
    xarray.DataArray
        ``pc1`` on ``(cell_ids, year)``.
    """
    x = np.stack([ds[b].to_numpy() for b in BANDS], axis=-1).astype(np.float64)
    rows = x.reshape(-1, len(BANDS))
    ok = np.isfinite(rows).all(axis=1)
    scores = np.full(len(rows), np.nan)
    if ok.sum() >= 2:
        centred = rows[ok] - rows[ok].mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        axis = vt[0] * np.sign(vt[0][np.argmax(np.abs(vt[0]))])
        scores[ok] = centred @ axis
    return xr.DataArray(
        scores.reshape(x.shape[:2]).astype(np.float32),
        dims=("cell_ids", "year"),
        coords={"cell_ids": ds["cell_ids"], "year": ds["year"]},
        name="pc1",
    )


def feature_summary(result: EmbeddingResult) -> dict[str, Any]:
    """Summarise counts, cost and coverage of a result, for reports and metadata.

    Parameters
    ----------
    result : EmbeddingResult
        What :func:`alphaearth_features` returned.

    Returns
    -------
    dict
        cells, years, clusters, requests, request_attempts, requests_from_cache,
        cells_with_data and mean_valid_fraction.
    """
    ds, stats = result.dataset, result.stats
    valid = ds["valid_fraction"].to_numpy()
    return {
        "cells": int(ds.sizes["cell_ids"]),
        "years": [int(y) for y in ds["year"].to_numpy()],
        "clusters": stats.clusters,
        "requests": stats.requests,
        "request_attempts": stats.attempts,
        "requests_from_cache": stats.cached,
        "cells_with_data": int((valid > 0).any(axis=1).sum()),
        "mean_valid_fraction": round(float(valid.mean()), 4) if valid.size else None,
    }
