"""Per-cell AlphaEarth embeddings of several grid levels, their summaries and first component.

The call the assets and the CLI share, and the summaries and map their reports show.

The embeddings come from a client of :mod:`entropice_core.ingest.alphaearth` (Earth Engine per
level and cluster, or the COGs in one pass for all levels); this module only picks the years
and summarises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import xarray as xr

from entropice_core.ingest.alphaearth import BANDS, EmbeddingClient, EmbeddingResult


def alphaearth_features_levels(
    client: EmbeddingClient, levels: Mapping[str, gpd.GeoDataFrame], years: Sequence[int]
) -> dict[str, EmbeddingResult]:
    """Fetch the L2 datasets of several grid levels for ``years`` (sorted, each once).

    Clients that aggregate the COGs themselves serve every level in one pass over each file
    (``CogClient.embeddings_levels``); Earth Engine answers level by level, per cluster.

    Parameters
    ----------
    client : EmbeddingClient
        Where the embeddings come from.
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key to its ``grid_cells``.
    years : sequence of int
        The years to fetch (at least one).

    Returns
    -------
    dict of str to EmbeddingResult
        Per level key, its dataset (dims cell_ids, year) and what it cost.

    Raises
    ------
    ValueError
        If ``years`` is empty.
    """
    if not years:
        raise ValueError("no AlphaEarth year to fetch: give at least one year (2017 onward)")
    return client.embeddings_levels(levels, sorted({int(y) for y in years}))


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


def feature_summary(ds: xr.Dataset) -> dict[str, Any]:
    """Summarise the cells, years and coverage of an embeddings dataset, for reports.

    Parameters
    ----------
    ds : xarray.Dataset
        An alphaearth_features dataset.

    Returns
    -------
    dict
        cells, years, cells_with_data and mean_valid_fraction.
    """
    valid = ds["valid_fraction"].to_numpy()
    return {
        "cells": int(ds.sizes["cell_ids"]),
        "years": [int(y) for y in ds["year"].to_numpy()],
        "cells_with_data": int((valid > 0).any(axis=1).sum()),
        "mean_valid_fraction": round(float(valid.mean()), 4) if valid.size else None,
    }


def cost_summary(results: Mapping[str, EmbeddingResult]) -> dict[str, Any]:
    """Summarise what fetching cost, in total and per grid level, for reports and metadata.

    Parameters
    ----------
    results : mapping of str to EmbeddingResult
        Per level key, what :func:`alphaearth_features_levels` returned.

    Returns
    -------
    dict
        clusters, requests, request_attempts and requests_from_cache summed over the levels,
        and ``per_level``: the same per level key.
    """
    per_level = {
        key: {
            "clusters": r.stats.clusters,
            "requests": r.stats.requests,
            "request_attempts": r.stats.attempts,
            "requests_from_cache": r.stats.cached,
        }
        for key, r in results.items()
    }
    totals = {
        name: sum(level[name] for level in per_level.values())
        for name in ("clusters", "requests", "request_attempts", "requests_from_cache")
    }
    return {**totals, "per_level": per_level}
