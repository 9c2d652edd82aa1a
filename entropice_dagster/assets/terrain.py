"""Terrain stage: ArcticDEM tiles, derivative rasters in Icechunk, per-cell terrain statistics."""

import dagster as dg
from pydantic import Field

from entropice_core.config import ArrayBackend, Device
from entropice_core.terrain.overviews import STRIDES as OVERVIEW_STRIDES
from entropice_dagster.automation import ON_UPDATED_INPUTS
from entropice_dagster.checks import check_specs, checked_output, elevation_plausible
from entropice_dagster.io_managers import (
    MANIFEST_IO_MANAGER_KEY,
    OVERVIEWS_METADATA_KEY,
    PREVIEW_METADATA_KEY,
    ZARR_IO_MANAGER_KEY,
)
from entropice_dagster.metadata import OWNERS, cell_map, stored_at
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.pools import DASK_POOL
from entropice_dagster.resources import (
    ArcticDEMSourceResource,
    AreaOfInterestResource,
    DaskResource,
    DataDirResource,
)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="terrain",
    kinds={"geotiff"},
    code_version="2",
    io_manager_key=MANIFEST_IO_MANAGER_KEY,
    metadata=stored_at("arcticdem_tiles"),
)
def arcticdem_tiles(
    arcticdem_source: ArcticDEMSourceResource,
    area_of_interest: AreaOfInterestResource,
    data_dir: DataDirResource,
):
    """The ArcticDEM v4.1 32 m mosaic tiles covering the area, as published (COG, EPSG:3413).

    Missing tiles are downloaded (resumed, size-checked and opened before they count) when
    the source's client is 'pgc'; tiles the release lacks (open ocean) are listed as missing.
    The value is the manifest of the tiles on disk (the files stay where the source is).
    """
    fetched = arcticdem_source.fetch(data_dir.root, area_of_interest.area())
    manifest = fetched.manifest()
    metadata = {
        "folder": dg.MetadataValue.path(str(arcticdem_source.root(data_dir.root))),
        "tiles": len(fetched.present),
        "downloaded": len(fetched.downloaded),
        "missing_tiles": manifest["missing_tiles"],
        "bytes": sum(p.stat().st_size for p in fetched.present),
    }
    yield from checked_output(manifest, metadata)


class TerrainDerivativesConfig(dg.Config):
    """Neighbourhoods and backend of the derivatives (maps onto ``TerrainConfig``; unset
    fields keep its defaults)."""

    tpi_radii_m: list[float] | None = Field(
        default=None, description="Radii (m) of the TPI disks (default 160, 960)."
    )
    vrm_windows: list[int] | None = Field(
        default=None, description="Odd VRM window sizes in pixels (default 3, 9)."
    )
    derivatives: list[str] | None = Field(
        default=None,
        description="Which derivatives to compute (default all): 'slope', 'aspect', "
        "'curvature', 'tri', 'roughness', 'tpi', 'vrm'.",
    )
    backend: ArrayBackend = Field(
        default="numpy", description="Array backend: 'numpy' (device cpu) or 'cupy' (cuda)."
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="terrain",
    kinds={"icechunk", "zarr"},
    code_version="2",
    io_manager_key=ZARR_IO_MANAGER_KEY,
    pool=DASK_POOL,
    metadata={
        **stored_at("terrain_derivatives"),
        PREVIEW_METADATA_KEY: "slope",
        OVERVIEWS_METADATA_KEY: list(OVERVIEW_STRIDES),
    },
)
def terrain_derivatives(
    config: TerrainDerivativesConfig, watermask, arcticdem_tiles, dask: DaskResource
):
    """Slope, aspect, curvatures, TPI, TRI, roughness and VRM rasters of the DEM mosaic.

    Computed tile by tile with a halo (water masked), lazily; the IO manager writes them to
    an Icechunk repository, one commit per materialisation, whose snapshot id names the
    exact version. The tiles are computed and written as tasks on the Dask cluster.
    """
    from entropice_core.ingest.arcticdem import terrain_rasters
    from entropice_core.terrain.derivatives import TerrainConfig

    core = TerrainConfig(**config.model_dump(exclude_none=True))
    rasters = terrain_rasters(arcticdem_tiles["tiles"], watermask, core)
    metadata = {
        "variables": list(rasters.data_vars),
        "shape": list(rasters["elevation"].shape),
        "tiles": len(arcticdem_tiles["tiles"]),
        "halo_pixels": rasters.attrs["halo_pixels"],
        **dask.metadata(),
    }
    # the IO manager computes and commits the tiles while the output is handled, inside
    # this block: on the cluster's workers (io.icechunk writes through session forks)
    with dask.computing():
        yield from checked_output(rasters, metadata)


class TerrainStatisticsConfig(dg.Config):
    """Which grid levels the one pass serves, and whether it samples (maps onto
    ``derivative_features_levels``)."""

    grid_levels: list[str] | None = Field(
        default=None,
        description="Grid level keys to compute (each needs its grid_cells); default: every "
        "grid level whose grid_cells exist.",
    )
    min_pixels_per_cell: int = Field(
        default=0,
        ge=0,
        description="0 (default): every pixel, exact, all levels in one pass over the rasters. "
        "Above 0: sample every k-th pixel so that a median cell keeps at least this many "
        "(e.g. 2500), level by level; the expected error of the means is in the metadata.",
    )
    device: Device = Field(
        default="cpu",
        description="Where the exact pass reduces the bands: 'cpu' (compiled passes) or "
        "'cuda' (on the GPU with cupy, the gpu extra; the same results).",
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="terrain",
    kinds={"zarr"},
    code_version="1",
    io_manager_key=ZARR_IO_MANAGER_KEY,
    pool=DASK_POOL,
    metadata=stored_at("terrain_statistics"),
    deps=[dg.AssetDep("grid_cells", partition_mapping=dg.AllPartitionMapping())],
    automation_condition=ON_UPDATED_INPUTS,
)
def terrain_statistics(
    config: TerrainStatisticsConfig,
    terrain_derivatives,
    data_dir: DataDirResource,
    dask: DaskResource,
):
    """Exact per-cell statistics of elevation and every derivative on all grid levels at once.

    One pass over the rasters serves every level (each band read once, each pixel sorted
    once for the medians and quartiles; docs/aggregation.md), so that nine levels cost about
    what one does. terrain_features takes each level out of it. Sampling is an explicit
    option (min_pixels_per_cell), with its expected error in the metadata.
    """
    from entropice_core.features import terrain
    from entropice_core.features.levels import statistics_tree
    from entropice_core.io.assets import load_grid_levels
    from entropice_core.layout import Layout

    levels = load_grid_levels(Layout(data_dir.root), config.grid_levels)
    with dask.client.as_current():
        found = terrain.derivative_features_levels(
            terrain_derivatives, levels, config.min_pixels_per_cell, True, config.device
        )
    summaries = {key: terrain.feature_summary(features) for key, features in found.items()}
    metadata = {
        **dask.metadata(),
        "grid_levels": dg.MetadataValue.json(
            {key: {k: v for k, v in summary.items() if k != "derivatives_snapshot_id"}
             for key, summary in summaries.items()}
        ),
        "derivatives_snapshot_id": terrain_derivatives.attrs["icechunk_snapshot_id"],
        "exact": config.min_pixels_per_cell == 0,
        "device": config.device,
    }  # fmt: skip
    yield from checked_output(statistics_tree(found), metadata)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="terrain",
    kinds={"zarr"},
    code_version="3",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    metadata=stored_at("terrain_features"),
    check_specs=check_specs(
        "terrain_features", elevation_plausible, partitions_def=grid_partitions
    ),
    automation_condition=ON_UPDATED_INPUTS,
)
def terrain_features(context: dg.AssetExecutionContext, terrain_statistics, grid_cells):
    """Per-cell statistics of elevation and every terrain derivative (aspect as northness
    and eastness) on one grid level.

    Mean, std, min, max, median and quartiles inside each cell over every pixel (exact cell
    coverage, see docs/aggregation.md) plus the valid fraction of the cell's area: this
    level's part of terrain_statistics, which computes all levels in one pass.
    """
    from entropice_core.features import terrain
    from entropice_core.features.levels import level_features

    features = level_features(terrain_statistics, context.partition_key, "terrain_statistics")
    features = features.load()
    metadata = terrain.feature_summary(features)
    metadata["map"] = cell_map(grid_cells, features["elevation_mean"], "mean elevation (m)")
    yield from checked_output(features, metadata, [elevation_plausible(features, grid_cells)])
