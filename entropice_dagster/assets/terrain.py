"""Terrain stage: ArcticDEM tiles, derivative rasters in Icechunk, per-cell terrain statistics."""

import base64
import io

import dagster as dg
import geopandas as gpd
import numpy as np
from matplotlib.figure import Figure
from pydantic import Field

from entropice_core.config import ArrayBackend, GridSpec
from entropice_core.ingest import arcticdem
from entropice_core.io.icechunk import branch_snapshot, commit_raster, read_dataset_version
from entropice_core.terrain.derivatives import TerrainConfig
from entropice_dagster.checks import checked_output
from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.resources import (
    ArcticDEMSourceResource,
    AreaOfInterestResource,
    DaskResource,
    DataDirResource,
)

#: Plausible ellipsoidal heights in the Arctic (m): below the sea floor of fjords, above Denali.
ELEVATION_RANGE = (-200.0, 6500.0)
#: The derivatives' Icechunk repository under the data directory (architecture.md).
DERIVATIVES_REPO = "arcticdem/derivatives.icechunk"
_DEFAULT = TerrainConfig()


@dg.asset(
    group_name="terrain",
    kinds={"geotiff"},
    code_version="1",
    # Where the sample region and downloads put the tiles (the resource may point elsewhere).
    metadata={"entropice/path": "sources/arcticdem"},
)
def arcticdem_tiles(
    arcticdem_source: ArcticDEMSourceResource,
    area_of_interest: AreaOfInterestResource,
    data_dir: DataDirResource,
) -> dg.MaterializeResult:
    """The ArcticDEM v4.1 32 m mosaic tiles covering the area, as published (COG, EPSG:3413).

    Missing tiles are downloaded (resumed, size-checked and opened before they count) when
    the source's client is 'pgc'; tiles the release lacks (open ocean) are listed as missing.
    """
    fetched = arcticdem_source.fetch(data_dir.root, area_of_interest.area())
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(arcticdem_source.root(data_dir.root))),
            "tiles": len(fetched.present),
            "downloaded": len(fetched.downloaded),
            "missing_tiles": [f"{r}_{c}" for r, c in fetched.missing],
            "bytes": sum(p.stat().st_size for p in fetched.present),
        }
    )


class TerrainDerivativesConfig(dg.Config):
    """Neighbourhoods and backend of the derivatives (maps onto ``TerrainConfig``)."""

    tpi_radii_m: list[float] = Field(
        default=list(_DEFAULT.tpi_radii_m), description="Radii (m) of the TPI disks."
    )
    vrm_windows: list[int] = Field(
        default=list(_DEFAULT.vrm_windows), description="Odd VRM window sizes (pixels)."
    )
    backend: ArrayBackend = Field(
        default="numpy", description="Array backend: 'numpy' (device cpu) or 'cupy' (cuda)."
    )


def _preview(values: np.ndarray, title: str) -> dg.MetadataValue:
    figure = Figure(figsize=(4.5, 4), dpi=80, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values, cmap="magma", vmin=0, vmax=np.nanpercentile(values, 99))
    figure.colorbar(image, ax=ax)
    ax.set_title(title)
    ax.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


@dg.asset(
    group_name="terrain",
    kinds={"icechunk", "zarr"},
    code_version="1",
    deps=[arcticdem_tiles],
    pool="dask",
    metadata={"entropice/path": DERIVATIVES_REPO},
)
def terrain_derivatives(
    config: TerrainDerivativesConfig,
    watermask: gpd.GeoDataFrame,
    arcticdem_source: ArcticDEMSourceResource,
    area_of_interest: AreaOfInterestResource,
    data_dir: DataDirResource,
) -> dg.MaterializeResult:
    """Slope, aspect, curvatures, TPI, TRI, roughness and VRM rasters of the DEM mosaic.

    Computed tile by tile with a halo (water masked) and written to an Icechunk repository,
    one commit per materialisation; the snapshot id names the exact version.
    """
    core = TerrainConfig(
        tpi_radii_m=tuple(config.tpi_radii_m),
        vrm_windows=tuple(config.vrm_windows),
        backend=config.backend,
    )
    tiles, _ = arcticdem_source.tiles(data_dir.root, area_of_interest.area())
    rasters = arcticdem.terrain_rasters(tiles, watermask, core)
    repo = data_dir.root / DERIVATIVES_REPO
    snapshot = commit_raster(rasters, repo, f"terrain_derivatives from {len(tiles)} tiles")
    slope = read_dataset_version(repo, None, snapshot)["slope"][::32, ::32].to_numpy()
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(repo)),
            "icechunk_snapshot_id": snapshot,
            "variables": list(rasters.data_vars),
            "shape": list(rasters["elevation"].shape),
            "tiles": len(tiles),
            "halo_pixels": rasters.attrs["halo_pixels"],
            "slope_preview": _preview(slope, "slope (degrees), every 32nd pixel"),
        }
    )


class TerrainFeaturesConfig(dg.Config):
    """How many pixels the per-cell statistics sample (maps onto ``terrain_features``)."""

    min_pixels_per_cell: int = Field(
        default=arcticdem.MIN_PIXELS_PER_CELL,
        ge=0,
        description="Sample every k-th pixel so that a median cell keeps at least this many; "
        "0 uses every pixel (exact, slow on coarse levels).",
    )


@dg.asset(
    group_name="terrain",
    kinds={"zarr"},
    code_version="2",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    deps=[terrain_derivatives],
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
    config: TerrainFeaturesConfig,
    grid_cells: gpd.GeoDataFrame,
    data_dir: DataDirResource,
    dask: DaskResource,
):
    """Per-cell statistics of elevation and every terrain derivative (aspect as northness
    and eastness).

    Mean, std, min, max, median and quartiles inside each cell (exact cell coverage, see
    docs/aggregation.md) over a regular pixel sample sized to the cells (docs/terrain.md),
    plus the valid fraction of the cell's area.
    """
    spec = GridSpec.from_key(context.partition_key)
    repo = data_dir.root / DERIVATIVES_REPO
    snapshot = branch_snapshot(repo)
    rasters = read_dataset_version(repo, None, snapshot)
    with dask.client.as_current():
        features = arcticdem.terrain_features(
            rasters, grid_cells, spec, min_pixels_per_cell=config.min_pixels_per_cell, parallel=True
        )
    # travels with the data, so a model trained on it names the derivatives' exact version
    features.attrs["derivatives_snapshot_id"] = snapshot
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
            **dask.metadata(),
            "derivatives_snapshot_id": snapshot,
            "pixel_stride": features.attrs["pixel_stride"],
            "variables": len(features.data_vars),
            "cells": len(grid_cells),
            "cells_with_data": int(finite.size),
            "mean_elevation_m": round(float(finite.mean()), 1) if finite.size else None,
            "mean_slope_deg": round(float(np.nanmean(features["slope_mean"])), 2)
            if finite.size
            else None,
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
