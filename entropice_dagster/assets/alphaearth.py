"""AlphaEarth stage: per-cell satellite embeddings per grid level and year."""

import dagster as dg
from pydantic import Field

from entropice_dagster.automation import ON_UPDATED_INPUTS
from entropice_dagster.checks import check_specs, checked_output, embeddings_valid
from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY
from entropice_dagster.metadata import OWNERS, png_markdown, stored_at
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.resources import DataDirResource, EarthEngineResource


class AlphaEarthConfig(dg.Config):
    """Which years to fetch (maps onto ``alphaearth_features``' ``years``)."""

    years: list[int] = Field(
        default_factory=list,
        description="Years (2017 onward); empty: every year the source has (offline: its year "
        "folders; Earth Engine: the catalogue's 2017-2024). Years fetched before cost no "
        "request: they come from the cluster cache.",
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="alphaearth",
    kinds={"zarr"},
    code_version="1",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    metadata=stored_at("alphaearth_features"),
    check_specs=check_specs(
        "alphaearth_features", embeddings_valid, partitions_def=grid_partitions
    ),
    automation_condition=ON_UPDATED_INPUTS,
)
def alphaearth_features(
    context: dg.AssetExecutionContext,
    config: AlphaEarthConfig,
    grid_cells,
    earth_engine: EarthEngineResource,
    data_dir: DataDirResource,
):
    """Per-cell means of the 64 AlphaEarth embedding axes A00..A63 and the valid-pixel share
    of each cell, per year (dims cell_ids x year; docs/alphaearth.md).

    Partitioned by grid level only; the years are a config list stored together in the
    level's one store. Adding a year still costs only that year's requests: every (cluster of
    cells, year) answer is kept in the on-disk cluster cache, so the years fetched before are
    read back, not requested. One store per level keeps the dataset's year axis whole for the
    training datasets, without a second partition dimension.
    """
    from entropice_core.config import GridSpec
    from entropice_core.features import alphaearth
    from entropice_core.plots import cell_values_png

    spec = GridSpec.from_key(context.partition_key)
    years = config.years or earth_engine.years(data_dir.root)
    client = earth_engine.embedding_client(data_dir.root)
    result = alphaearth.alphaearth_features(client, grid_cells, spec, years)
    pc1 = alphaearth.first_component(result.dataset).isel(year=-1)
    title = f"{context.partition_key}: first principal component, {int(pc1.year)}"
    metadata = {
        **alphaearth.feature_summary(result),
        "pc1_map": png_markdown(cell_values_png(grid_cells, pc1.to_numpy(), title), title),
    }
    features = result.dataset
    yield from checked_output(features, metadata, [embeddings_valid(features, grid_cells)])
