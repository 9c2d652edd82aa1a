"""Jobs: the per-cell stage as one partitioned job, so a backfill covers every grid level.

``dagster job backfill -j per_cell_assets --all --noprompt -w workspace.yaml`` queues a backfill
of all nine grid levels (run by the daemon that ``make ui`` starts); the UI does the same from
the asset graph.
"""

import dagster as dg

per_cell_assets = dg.define_asset_job(
    "per_cell_assets",
    selection=dg.AssetSelection.assets(
        "grid_cells", "rts_labels", "terrain_features", "climate_features", "alphaearth_features"
    ),
    description="Grid cells, RTS labels, terrain, climate and AlphaEarth features for one grid "
    "level (partitioned by grid_level); backfill it for all levels.",
)

era5_arctic_year = dg.define_asset_job(
    "era5_arctic_year",
    selection=dg.AssetSelection.assets("era5_hourly", "era5_daily", "era5_yearly"),
    description="ERA5 download, daily aggregates and yearly indices of one Arctic year; "
    "backfill it for all years (then run per_cell_assets for climate_features).",
)
