"""Terrain stage: per-cell statistics of ArcticDEM elevation (derivatives come next)."""

import dagster as dg
import geopandas as gpd
import numpy as np

from entropice_core.config import GridSpec
from entropice_core.ingest import arcticdem
from entropice_dagster.checks import checked_output
from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.resources import (
    ArcticDEMSourceResource,
    AreaOfInterestResource,
    DataDirResource,
)

#: Plausible ellipsoidal heights in the Arctic (m): below the sea floor of fjords, above Denali.
ELEVATION_RANGE = (-200.0, 6500.0)


@dg.asset(
    group_name="terrain",
    kinds={"zarr"},
    code_version="1",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    pool="dask",
    metadata={"entropice/path": "arcticdem/features_{partition_key}.zarr"},
    check_specs=[
        dg.AssetCheckSpec(
            "elevation_plausible",
            asset="terrain_features",
            description="Every cell of the grid is present and cell means of elevation lie in "
            f"{ELEVATION_RANGE[0]:g}..{ELEVATION_RANGE[1]:g} m.",
            blocking=True,
        )
    ],
)
def terrain_features(
    context: dg.AssetExecutionContext,
    grid_cells: gpd.GeoDataFrame,
    arcticdem_source: ArcticDEMSourceResource,
    area_of_interest: AreaOfInterestResource,
    data_dir: DataDirResource,
):
    """Per-cell elevation statistics from the ArcticDEM 32 m mosaic.

    Mean, std, min, max, median and quartiles of the heights inside each cell (exact cell
    coverage, see docs/aggregation.md), plus the valid fraction of the cell's area.
    """
    spec = GridSpec.from_key(context.partition_key)
    tiles, missing = arcticdem_source.tiles(data_dir.root, area_of_interest.area())
    if missing:
        context.log.warning(
            f"{len(missing)} tiles of the index are absent (open ocean?): {missing}"
        )
    features = arcticdem.terrain_features(tiles, grid_cells, spec)
    means = features["elevation_mean"].to_numpy()
    finite = means[np.isfinite(means)]
    in_range = bool(
        len(features["cell_ids"]) == len(grid_cells)
        and finite.size > 0
        and finite.min() >= ELEVATION_RANGE[0]
        and finite.max() <= ELEVATION_RANGE[1]
    )
    yield from checked_output(
        features,
        {
            "tiles": len(tiles),
            "missing_tiles": [str(p) for p in missing],
            "cells": len(grid_cells),
            "cells_with_data": int(finite.size),
            "mean_elevation_m": round(float(finite.mean()), 1) if finite.size else None,
        },
        [
            dg.AssetCheckResult(
                check_name="elevation_plausible",
                passed=in_range,
                metadata={
                    "min_mean_m": float(finite.min()) if finite.size else None,
                    "max_mean_m": float(finite.max()) if finite.size else None,
                },
            )
        ],
    )
