"""Climate stage: ERA5 hourly files, daily aggregates, indices per Arctic year, per-cell features.

Definitions and conventions are in docs/climate.md.
"""

from pathlib import Path

import dagster as dg

from entropice_core.layout import Layout
from entropice_dagster.automation import CLIMATE_AUTOMATION
from entropice_dagster.checks import check_specs, checked_output, degree_days_plausible
from entropice_dagster.io_managers import MANIFEST_IO_MANAGER_KEY, ZARR_IO_MANAGER_KEY
from entropice_dagster.metadata import OWNERS, cell_map, markdown_table, stored_at
from entropice_dagster.partitions import arctic_year_partitions, grid_partitions
from entropice_dagster.resources import (
    AreaOfInterestResource,
    CdsResource,
    DaskResource,
    DataDirResource,
)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="climate",
    kinds={"netcdf"},
    code_version="2",
    partitions_def=arctic_year_partitions,
    io_manager_key=MANIFEST_IO_MANAGER_KEY,
    metadata=stored_at("era5_hourly"),
)
def era5_hourly(
    context: dg.AssetExecutionContext,
    cds: CdsResource,
    area_of_interest: AreaOfInterestResource,
    data_dir: DataDirResource,
):
    """Hourly ERA5 t2m, sd, tp and sf of one Arctic year, as the CDS delivers them.

    One netCDF file per month and step type under sources/era5/{year}/{month}/; complete
    files are kept (resume), requests are split to respect the CDS limits and retried. The
    value is the manifest of the year's files.
    """
    from entropice_core.ingest import era5

    year, root = int(context.partition_key), cds.root(data_dir.root)
    report = cds.download(data_dir.root, year, area_of_interest.area(), log=context.log.info)
    closing = era5.era5_path(root, year, 10, "accum")
    absent = [p for p in report.missing if p != closing]
    if absent:
        raise dg.Failure(
            f"{len(absent)} ERA5 files of Arctic year {year} are absent or incomplete and the "
            f"CDS client is offline (e.g. {absent[0]}): set the cds resource's client='cds'",
        )
    if closing in report.missing:
        context.log.warning(f"{closing} (1 Oct {year} 00 UTC) is absent: 30 Sep {year} has a gap")
    manifest = era5.hourly_manifest(root, year)
    metadata = {
        "downloaded": len(report.downloaded),
        "already_complete": len(report.skipped),
        "missing": [str(p) for p in report.missing],
        "bytes": sum(Path(f).stat().st_size for f in manifest["files"]),
        "folder": dg.MetadataValue.path(str(root)),
    }
    yield from checked_output(manifest, metadata)


@dg.asset(  # type: ignore[call-overload]  # dg.Nothing is typed as the None type
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="climate",
    kinds={"zarr"},
    code_version="1",
    partitions_def=arctic_year_partitions,
    deps=["era5_hourly"],
    dagster_type=dg.Nothing,  # written by the core (see below), no IO manager
    metadata=stored_at("era5_daily"),
)
def era5_daily(context: dg.AssetExecutionContext, cds: CdsResource, data_dir: DataDirResource):
    """Daily (UTC) mean/min/max 2 m temperature (degC), precipitation and snowfall (mm) and
    snow water equivalent (mm) of one Arctic year on the ERA5 grid; gaps stay NaN."""
    from entropice_core.ingest import era5

    year = int(context.partition_key)
    path = Layout(data_dir.root).era5_daily(year)
    # Written by the core, not an IO manager: a year of hourly Arctic data does not fit in
    # memory, so write_daily appends month by month to a temporary store that it swaps in.
    report = era5.write_daily(cds.root(data_dir.root), year, path, log=context.log.info)
    daily = era5.read_daily(path)
    gap_days = report.gap_days(daily)
    if gap_days:
        context.log.warning(f"{len(gap_days)} days with missing hours (left NaN): {gap_days}")
    metadata = {
        "path": dg.MetadataValue.path(str(path)),
        "days": daily.sizes["time"],
        "grid": f"{daily.sizes['latitude']} x {daily.sizes['longitude']}",
        "missing_hours": report.missing_hours,
        "gap_days": gap_days,
        "monthly_domain_means": markdown_table(era5.daily_summary(daily), 2),
    }
    yield from checked_output(None, metadata)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="climate",
    kinds={"zarr"},
    code_version="1",
    partitions_def=arctic_year_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    deps=[era5_daily],
    metadata=stored_at("era5_yearly"),
)
def era5_yearly(context: dg.AssetExecutionContext, data_dir: DataDirResource):
    """Climate indices of one Arctic year on the ERA5 grid: degree days, thaw season, snow
    cover days, yearly, seasonal and shoulder aggregates (docs/climate.md).

    The next Arctic year's daily store, where it exists, completes the thaw season and SON.
    """
    from entropice_core.features import climate

    year, layout = int(context.partition_key), Layout(data_dir.root)
    indices = climate.yearly_from_stores(layout.era5_daily(year), layout.era5_daily(year + 1), year)
    summary = climate.yearly_summary(indices)
    summary["domain_means"] = markdown_table(summary["domain_means"], 2)
    yield from checked_output(indices, summary)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="climate",
    kinds={"zarr"},
    code_version="1",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    automation_condition=CLIMATE_AUTOMATION,
    deps=[dg.AssetDep(era5_yearly, partition_mapping=dg.AllPartitionMapping())],
    metadata=stored_at("climate_features"),
    check_specs=check_specs(
        "climate_features", degree_days_plausible, partitions_def=grid_partitions
    ),
)
def climate_features(
    context: dg.AssetExecutionContext, grid_cells, data_dir: DataDirResource, dask: DaskResource
):
    """Per-cell climate indices per Arctic year (dims cell_ids x year): area-weighted means of
    the 0.25 degree ERA5 indices over each cell, with exact coverage and the 180 degree wrap.

    Every Arctic year whose indices exist is used (years not yet computed are left out).
    No pool: the 0.25 degree raster is small and the store a plain Zarr (no repository
    commit), so levels run side by side, beside the terrain passes.
    """
    from entropice_core.config import GridSpec
    from entropice_core.features import climate

    indices = climate.open_yearly(Layout(data_dir.root).era5_yearly_stores())
    spec = GridSpec.from_key(context.partition_key)
    with dask.client.as_current():
        features = climate.climate_features(indices, grid_cells, spec, parallel=True)
    metadata = {**dask.metadata(), **climate.feature_summary(features)}
    metadata["map"] = cell_map(
        grid_cells, features["thawing_degree_days"].mean("year"), "TDD, °C·d"
    )
    yield from checked_output(features, metadata, [degree_days_plausible(features, grid_cells)])
