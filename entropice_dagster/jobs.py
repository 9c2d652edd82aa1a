"""Jobs: the per-cell stage as one partitioned job, so a backfill covers every grid level.

``dagster job backfill -j per_cell_assets --all --noprompt -w workspace.yaml`` queues a backfill
of all nine grid levels (run by the daemon that ``make ui`` starts); the UI does the same from
the asset graph. Terrain and AlphaEarth features are left out of the job: ``terrain_statistics``
and ``alphaearth_statistics`` compute all levels in one pass once the grid cells exist, and a job
run per level would repeat that pass.
``icechunk_maintenance`` bounds the Icechunk repositories (old snapshots expired, unreachable
chunks deleted); a schedule runs it daily.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from entropice_core.layout import Layout
from entropice_dagster.pools import DASK_POOL
from entropice_dagster.resources import DataDirResource

per_cell_assets = dg.define_asset_job(
    "per_cell_assets",
    selection=dg.AssetSelection.assets("grid_cells", "rts_labels", "climate_features"),
    description="Grid cells, RTS labels and climate features for one grid level (partitioned "
    "by grid_level); backfill it for all levels. Terrain and AlphaEarth features come from "
    "terrain_statistics and alphaearth_statistics, each one pass for every level whose grid "
    "cells exist: materialise them, then terrain_features and alphaearth_features (the "
    "automation sensor does, or the UI).",
)

era5_arctic_year = dg.define_asset_job(
    "era5_arctic_year",
    selection=dg.AssetSelection.assets("era5_hourly", "era5_daily", "era5_yearly"),
    description="ERA5 download, daily aggregates and yearly indices of one Arctic year; "
    "backfill it for all years (then run per_cell_assets for climate_features).",
)


class IcechunkMaintenanceConfig(dg.Config):
    """Retention of the Icechunk repositories (maps onto ``maintain_repository``, whose
    defaults, ``KEEP_SNAPSHOTS`` and ``ORPHAN_AGE``, these repeat: the definitions load
    without importing icechunk)."""

    keep_snapshots: int = Field(
        default=3,
        ge=1,
        description="Newest snapshots of the main branch kept readable; older ones expire.",
    )
    orphan_age_hours: float = Field(
        default=24.0,
        ge=0,
        description="Unreferenced objects (expired snapshots' chunks, chunks of killed "
        "writes) are deleted once older than this; keep it above the longest write.",
    )


@dg.op(pool=DASK_POOL)
def maintain_icechunk_repositories(
    context: dg.OpExecutionContext, config: IcechunkMaintenanceConfig, data_dir: DataDirResource
):
    """Expire old snapshots and garbage-collect each Icechunk repository of the data directory.

    In pool ``dask`` with the assets that write the repositories, so that (with the default
    pool limit of one) it never runs beside a write.
    """
    from entropice_core.io.icechunk import maintain_repository

    for asset, path in Layout(data_dir.root).icechunk_repositories().items():
        done = maintain_repository(
            path, config.keep_snapshots, dt.timedelta(hours=config.orphan_age_hours)
        )
        context.log.info(
            f"{path}: {done.snapshots_expired} snapshots expired, {done.snapshots_kept} kept, "
            f"{done.chunks_deleted} chunks deleted, {done.bytes_before:,} -> "
            f"{done.bytes_after:,} bytes"
        )
        yield dg.AssetObservation(
            asset_key=asset,
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "snapshots_expired": done.snapshots_expired,
                "snapshots_kept": done.snapshots_kept,
                "chunks_deleted": done.chunks_deleted,
                "bytes_before": done.bytes_before,
                "bytes": done.bytes_after,
            },
        )
    yield dg.Output(None)


@dg.job(
    description="Expire Icechunk snapshots beyond the retention and delete unreachable chunks "
    "(of expired snapshots and of killed writes), so repositories stay bounded."
)
def icechunk_maintenance():
    """Maintain every Icechunk repository of the data directory."""
    maintain_icechunk_repositories()
