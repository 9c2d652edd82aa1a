"""Climate stage: ERA5 hourly files, daily aggregates, indices per Arctic year, per-cell features.

Definitions and conventions are in docs/climate.md.
"""

import json

import dagster as dg
import geopandas as gpd
import numpy as np
import pandas as pd

from entropice_core.climate import features as climate
from entropice_core.config import GridSpec
from entropice_core.ingest import era5
from entropice_core.io.atomic import atomic_path
from entropice_dagster.checks import checked_output
from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY
from entropice_dagster.partitions import arctic_year_partitions, grid_partitions
from entropice_dagster.resources import (
    AreaOfInterestResource,
    CdsResource,
    DaskResource,
    DataDirResource,
)

HOURLY_MANIFEST = "era5/hourly/{partition_key}.json"
DAILY_PATH = "era5/daily/{partition_key}.zarr"
YEARLY_PATH = "era5/yearly/{partition_key}.zarr"
#: Recompute climate_features when any Arctic year's indices change (the era5_refresh schedule
#: updates them), once the grid cells exist, even while other years are not materialised.
CLIMATE_AUTOMATION = dg.AutomationCondition.eager().without(
    ~dg.AutomationCondition.any_deps_missing()
) & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets("era5_yearly"))
#: Plausible cell means of thawing degree days (degC day) north of 50 N.
TDD_RANGE = (0.0, 4000.0)


def _path(data_dir: DataDirResource, template: str, key: str):
    return data_dir.root / template.format(partition_key=key)


@dg.asset(
    group_name="climate",
    kinds={"netcdf"},
    code_version="1",
    partitions_def=arctic_year_partitions,
    metadata={"entropice/path": HOURLY_MANIFEST},
)
def era5_hourly(
    context: dg.AssetExecutionContext,
    cds: CdsResource,
    area_of_interest: AreaOfInterestResource,
    data_dir: DataDirResource,
) -> dg.MaterializeResult:
    """Hourly ERA5 t2m, sd, tp and sf of one Arctic year, as the CDS delivers them.

    One netCDF file per month and step type under sources/era5/{year}/{month}/; complete
    files are kept (resume), requests are split to respect the CDS limits and retried.
    """
    year = int(context.partition_key)
    report = cds.download(data_dir.root, year, area_of_interest.area(), log=context.log.info)
    closing = era5.era5_path(cds.root(data_dir.root), year, 10, "accum")
    absent = [p for p in report.missing if p != closing]
    if absent:
        raise dg.Failure(
            f"{len(absent)} ERA5 files of Arctic year {year} are absent or incomplete and the "
            f"CDS client is offline (e.g. {absent[0]}): set the cds resource's client='cds'",
        )
    if closing in report.missing:
        context.log.warning(
            f"{closing} (1 Oct {year} 00 UTC) is absent: the precipitation of 30 Sep {year} "
            "will be a gap in era5_daily"
        )
    files = era5.arctic_year_files(cds.root(data_dir.root), year)
    manifest = {"arctic_year": year, "files": [str(f) for f in files]}
    with atomic_path(_path(data_dir, HOURLY_MANIFEST, context.partition_key)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return dg.MaterializeResult(
        metadata={
            "downloaded": len(report.downloaded),
            "already_complete": len(report.skipped),
            "missing": [str(p) for p in report.missing],
            "bytes": sum(f.stat().st_size for f in files),
            "folder": dg.MetadataValue.path(str(cds.root(data_dir.root))),
        }
    )


@dg.asset(
    group_name="climate",
    kinds={"zarr"},
    code_version="1",
    partitions_def=arctic_year_partitions,
    deps=[era5_hourly],
    metadata={"entropice/path": DAILY_PATH},
)
def era5_daily(
    context: dg.AssetExecutionContext, cds: CdsResource, data_dir: DataDirResource
) -> dg.MaterializeResult:
    """Daily (UTC) mean/min/max 2 m temperature (degC), precipitation and snowfall (mm) and
    snow water equivalent (mm) of one Arctic year on the ERA5 grid; gaps stay NaN."""
    year = int(context.partition_key)
    path = _path(data_dir, DAILY_PATH, context.partition_key)
    report = era5.write_daily(cds.root(data_dir.root), year, path, log=context.log.info)
    daily = era5.read_daily(path)
    gap_days = report.gap_days(daily)
    if gap_days:
        context.log.warning(f"{len(gap_days)} days with missing hours (left NaN): {gap_days}")
    domain = daily[["t2m_mean", "precipitation"]].mean(("latitude", "longitude"))
    monthly = domain["t2m_mean"].resample(time="MS").mean().to_pandas().to_frame("t2m_degC")
    monthly["precipitation_mm"] = domain["precipitation"].resample(time="MS").sum().to_pandas()
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "days": daily.sizes["time"],
            "grid": f"{daily.sizes['latitude']} x {daily.sizes['longitude']}",
            "missing_hours": report.missing_hours,
            "gap_days": gap_days,
            "monthly_domain_means": dg.MetadataValue.md(
                monthly.round(2).rename_axis("month").to_markdown()
            ),
        }
    )


@dg.asset(
    group_name="climate",
    kinds={"zarr"},
    code_version="1",
    partitions_def=arctic_year_partitions,
    deps=[era5_daily],
    metadata={"entropice/path": YEARLY_PATH},
)
def era5_yearly(context: dg.AssetExecutionContext, data_dir: DataDirResource):
    """Climate indices of one Arctic year on the ERA5 grid: degree days, thaw season, snow
    cover days, yearly, seasonal and shoulder-season aggregates (docs/climate.md).

    The next Arctic year's daily store, where it exists, completes the thaw season and SON.
    """
    year = int(context.partition_key)
    next_path = _path(data_dir, DAILY_PATH, str(year + 1))
    indices = climate.write_yearly(
        _path(data_dir, DAILY_PATH, context.partition_key),
        next_path if next_path.exists() else None,
        year,
        _path(data_dir, YEARLY_PATH, context.partition_key),
    )
    summary = indices.isel(year=0).mean(("latitude", "longitude")).to_pandas()
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(_path(data_dir, YEARLY_PATH, str(year)))),
            "thaw_season_complete": next_path.exists(),
            "censored_freeze_up": int(
                (indices["freeze_up"].isnull() & indices["thaw_onset"].notnull()).sum()
            ),
            "mean_tdd": round(float(summary["thawing_degree_days"]), 1),
            "mean_fdd": round(float(summary["freezing_degree_days"]), 1),
            "domain_means": dg.MetadataValue.md(
                pd.DataFrame({"mean": summary.round(2)}).to_markdown()
            ),
        }
    )


@dg.asset(
    group_name="climate",
    kinds={"zarr"},
    code_version="1",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    pool="dask",
    automation_condition=CLIMATE_AUTOMATION,
    deps=[dg.AssetDep(era5_yearly, partition_mapping=dg.AllPartitionMapping())],
    metadata={"entropice/path": "era5/features_{partition_key}.zarr"},
    check_specs=[
        dg.AssetCheckSpec(
            "degree_days_plausible",
            asset="climate_features",
            description="Every cell is present and cell means of thawing degree days lie in "
            f"{TDD_RANGE[0]:g}..{TDD_RANGE[1]:g} degC day.",
            blocking=True,
        )
    ],
)
def climate_features(
    context: dg.AssetExecutionContext,
    grid_cells: gpd.GeoDataFrame,
    data_dir: DataDirResource,
    dask: DaskResource,
):
    """Per-cell climate indices per Arctic year (dims cell_ids x year): area-weighted means of
    the 0.25 degree ERA5 indices over each cell, with exact coverage and the 180 degree wrap."""
    spec = GridSpec.from_key(context.partition_key)
    paths = sorted((data_dir.root / "era5" / "yearly").glob("*.zarr"))
    with dask.client.as_current():
        features = climate.climate_features(
            climate.open_yearly(paths), grid_cells, spec, parallel=True
        )
    tdd = features["thawing_degree_days"].to_numpy()
    finite = tdd[np.isfinite(tdd)]
    passed = bool(
        features.sizes["cell_ids"] == len(grid_cells)
        and finite.size > 0
        and TDD_RANGE[0] <= finite.min()
        and finite.max() <= TDD_RANGE[1]
    )
    yield from checked_output(
        features,
        {
            **dask.metadata(),
            "cells": features.sizes["cell_ids"],
            "years": features["year"].to_numpy().tolist(),
            "mean_tdd": round(float(finite.mean()), 1) if finite.size else None,
            "nan_fraction": round(float(np.isnan(tdd).mean()), 4),
        },
        [
            dg.AssetCheckResult(
                check_name="degree_days_plausible",
                passed=passed,
                metadata={
                    "min_tdd": float(finite.min()) if finite.size else None,
                    "max_tdd": float(finite.max()) if finite.size else None,
                },
            )
        ],
    )
