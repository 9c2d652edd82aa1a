"""Terrain stage: ArcticDEM tiles, derivative rasters in Icechunk, per-cell terrain statistics."""

import dagster as dg
from pydantic import Field

from entropice_core.config import ArrayBackend
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
    pool="dask",
    metadata={
        **stored_at("terrain_derivatives"),
        PREVIEW_METADATA_KEY: "slope",
        OVERVIEWS_METADATA_KEY: list(OVERVIEW_STRIDES),
    },
)
def terrain_derivatives(config: TerrainDerivativesConfig, watermask, arcticdem_tiles):
    """Slope, aspect, curvatures, TPI, TRI, roughness and VRM rasters of the DEM mosaic.

    Computed tile by tile with a halo (water masked), lazily; the IO manager writes them to
    an Icechunk repository, one commit per materialisation, whose snapshot id names the
    exact version.
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
    }
    yield from checked_output(rasters, metadata)


class TerrainFeaturesConfig(dg.Config):
    """How many pixels the per-cell statistics use (maps onto ``terrain_features``)."""

    min_pixels_per_cell: int | None = Field(
        default=None,
        ge=0,
        description="Sample every k-th pixel so that a median cell keeps at least this many "
        "(default 2500; the expected error is in the metadata); 0: every pixel, exact.",
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="terrain",
    kinds={"zarr"},
    code_version="2",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    pool="dask",
    metadata=stored_at("terrain_features"),
    check_specs=check_specs(
        "terrain_features", elevation_plausible, partitions_def=grid_partitions
    ),
    automation_condition=ON_UPDATED_INPUTS,
)
def terrain_features(
    context: dg.AssetExecutionContext,
    config: TerrainFeaturesConfig,
    terrain_derivatives,
    grid_cells,
    dask: DaskResource,
):
    """Per-cell statistics of elevation and every terrain derivative (aspect as northness
    and eastness).

    Mean, std, min, max, median and quartiles inside each cell (exact cell coverage, see
    docs/aggregation.md) over a regular pixel sample sized to the cells, or every pixel with
    min_pixels_per_cell=0 (docs/terrain.md), plus the valid fraction of the cell's area.
    """
    from entropice_core.config import GridSpec
    from entropice_core.features import terrain

    spec = GridSpec.from_key(context.partition_key)
    options = config.model_dump(exclude_none=True)
    with dask.client.as_current():
        features = terrain.derivative_features(
            terrain_derivatives, grid_cells, spec, parallel=True, **options
        )
    metadata = {**dask.metadata(), **terrain.feature_summary(features)}
    metadata["map"] = cell_map(grid_cells, features["elevation_mean"], "mean elevation (m)")
    yield from checked_output(features, metadata, [elevation_plausible(features, grid_cells)])
