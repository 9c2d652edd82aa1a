"""AlphaEarth stage: per-cell satellite embeddings of every grid level, then each level's part."""

import dagster as dg
from pydantic import Field

from entropice_dagster.automation import ON_UPDATED_INPUTS
from entropice_dagster.checks import check_specs, checked_output, embeddings_valid
from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY
from entropice_dagster.metadata import OWNERS, png_markdown, stored_at
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.resources import DataDirResource, EarthEngineResource


class AlphaEarthConfig(dg.Config):
    """Which years and grid levels to fetch (maps onto ``alphaearth_features_levels``)."""

    years: list[int] = Field(
        default_factory=list,
        description="Years (2017 onward); empty: every year the source has (offline: its year "
        "folders; Earth Engine: the catalogue's 2017-2024). Years fetched before cost no "
        "request: they come from the cache.",
    )
    grid_levels: list[str] | None = Field(
        default=None,
        description="Grid level keys to compute (each needs its grid_cells); default: every "
        "grid level whose grid_cells exist.",
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="alphaearth",
    kinds={"zarr"},
    code_version="1",
    io_manager_key=ZARR_IO_MANAGER_KEY,
    metadata=stored_at("alphaearth_statistics"),
    deps=[dg.AssetDep("grid_cells", partition_mapping=dg.AllPartitionMapping())],
    automation_condition=ON_UPDATED_INPUTS,
)
def alphaearth_statistics(
    config: AlphaEarthConfig, earth_engine: EarthEngineResource, data_dir: DataDirResource
):
    """Per-cell means of the 64 AlphaEarth embedding axes A00..A63 and the valid-pixel share
    of each cell, per year, on every grid level (a child per level; dims cell_ids x year;
    docs/alphaearth.md).

    From the COGs (clients 'offline' and 'gcs') every file of a year is read once for all
    levels; from Earth Engine each level's cells go in clusters, one request each per year.
    Every answer is cached, so a year added costs only that year, and a re-run after a
    failure only what is missing. alphaearth_features takes each level out of it.
    """
    from entropice_core.features import alphaearth
    from entropice_core.features.levels import statistics_tree
    from entropice_core.io.assets import load_grid_levels
    from entropice_core.layout import Layout

    levels = load_grid_levels(Layout(data_dir.root), config.grid_levels)
    years = config.years or earth_engine.years(data_dir.root)
    client = earth_engine.embedding_client(data_dir.root)
    results = alphaearth.alphaearth_features_levels(client, levels, years)
    cost = alphaearth.cost_summary(results)
    metadata = {
        **{k: v for k, v in cost.items() if k != "per_level"},
        "years": sorted({int(y) for y in years}),
        "grid_levels": dg.MetadataValue.json(
            {key: {**alphaearth.feature_summary(r.dataset), **cost["per_level"][key]}
             for key, r in results.items()}
        ),
    }  # fmt: skip
    tree = statistics_tree({key: r.dataset for key, r in results.items()})
    yield from checked_output(tree, metadata)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="alphaearth",
    kinds={"zarr"},
    code_version="2",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    metadata=stored_at("alphaearth_features"),
    check_specs=check_specs(
        "alphaearth_features", embeddings_valid, partitions_def=grid_partitions
    ),
    automation_condition=ON_UPDATED_INPUTS,
)
def alphaearth_features(context: dg.AssetExecutionContext, alphaearth_statistics, grid_cells):
    """Per-cell means of the 64 AlphaEarth embedding axes and the valid-pixel share of each
    cell, per year, on one grid level: this level's part of alphaearth_statistics, with a map
    of the first principal component."""
    from entropice_core.features import alphaearth
    from entropice_core.features.levels import level_features
    from entropice_core.plots import cell_values_png

    key = context.partition_key
    features = level_features(alphaearth_statistics, key, "alphaearth_statistics").load()
    pc1 = alphaearth.first_component(features).isel(year=-1)
    title = f"{key}: first principal component, {int(pc1.year)}"
    metadata = {
        **alphaearth.feature_summary(features),
        "pc1_map": png_markdown(cell_values_png(grid_cells, pc1.to_numpy(), title), title),
    }
    yield from checked_output(features, metadata, [embeddings_valid(features, grid_cells)])
