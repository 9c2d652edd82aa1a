"""Sensors: new source data starts the runs that use it.

Each sensor only *returns* what should happen (run requests, partitions to add, a cursor);
the daemon applies it, so a preview tick (``dagster sensor preview``, or the UI's "Test
sensor") changes nothing on the instance.

- ``darts_release``: a new or changed file in the DARTS folder re-reads the release
  (``darts_polygons``, ``darts_coverage``); labels and models follow by automation.
- ``era5_arctic_years``: once ERA5 has published a whole Arctic year (ERA5T appears about 5
  days behind real time, so year Y, ending 30 September Y, is complete from about 6 October
  Y), the year becomes an ``arctic_year`` partition and its download, daily aggregates and
  indices run; the previous year's indices are recomputed once the new year's daily store
  exists (its thaw season, SON and autumn shoulder reach into October-December). Offline, the
  years are the ones whose 24 month files are in the folder.
- ``alphaearth_years``: a year the AlphaEarth source gains (a new annual layer, or a year
  folder of the offline mirror) re-runs ``alphaearth_statistics`` if it was materialised
  (earlier years come from the cache).

``climate_features``, ``alphaearth_features`` and everything downstream follow through their
automation conditions.
"""

import datetime as dt
import json

import dagster as dg

from entropice_core.io.versions import files_fingerprint
from entropice_dagster.jobs import era5_arctic_year
from entropice_dagster.partitions import ARCTIC_YEAR
from entropice_dagster.resources import (
    CdsResource,
    DartsSourceResource,
    DataDirResource,
    EarthEngineResource,
)

ERA5_ASSETS = ("era5_hourly", "era5_daily", "era5_yearly")
#: How often each sensor looks (the daemon's ticks are at least this far apart).
HOURLY = 3600
DAILY = 24 * HOURLY


def _materialized_at(instance: dg.DagsterInstance, asset: str, partition: str) -> float | None:
    """Timestamp of the latest materialisation of one partition, None if never."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0].timestamp if records else None


def arctic_year_requests(
    instance: dg.DagsterInstance, published: list[int]
) -> dg.SensorResult | dg.SkipReason:
    """What one tick does, given the Arctic years the source has (see the module docstring).

    Years not yet partitions are added; the newest year without ``era5_yearly`` is
    materialised (older ones are a backfill away: the UI's partition view or ``dagster job
    backfill -j era5_arctic_year``), then the year before it is completed.
    """
    if not published:
        return dg.SkipReason("the ERA5 source has no complete Arctic year yet")
    known = set(instance.get_dynamic_partitions(ARCTIC_YEAR))
    new = [str(y) for y in published if str(y) not in known]
    adding = [dg.AddDynamicPartitionsRequest(ARCTIC_YEAR, new)] if new else []
    year = max(published)
    runs = []
    if _materialized_at(instance, "era5_yearly", str(year)) is None:
        runs.append(
            dg.RunRequest(
                run_key=f"era5-{year}",
                asset_selection=[dg.AssetKey(a) for a in ERA5_ASSETS],
                partition_key=str(year),
            )
        )
    else:
        previous = _materialized_at(instance, "era5_yearly", str(year - 1))
        daily = _materialized_at(instance, "era5_daily", str(year))
        if previous is not None and daily is not None and previous < daily:
            runs.append(
                dg.RunRequest(
                    run_key=f"era5-yearly-{year - 1}-after-{daily:.0f}",
                    asset_selection=[dg.AssetKey("era5_yearly")],
                    partition_key=str(year - 1),
                )
            )
    if not adding and not runs:
        return dg.SkipReason(f"Arctic year {year} and the year before are up to date")
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=adding)


@dg.sensor(
    target=era5_arctic_year,
    minimum_interval_seconds=DAILY,
    description="Daily: add each Arctic year ERA5 has published (from about 6 October) as an "
    "arctic_year partition and run its download, daily aggregates and indices; then complete "
    "the previous year's thaw season. Offline: the years in the ERA5 folder.",
)
def era5_arctic_years(
    context: dg.SensorEvaluationContext, cds: CdsResource, data_dir: DataDirResource
):
    """Add published Arctic years and run the newest (see ``arctic_year_requests``)."""
    published = cds.published_years(data_dir.root, dt.datetime.now(dt.UTC))
    return arctic_year_requests(context.instance, published)


@dg.sensor(
    asset_selection=["darts_polygons", "darts_coverage"],
    minimum_interval_seconds=HOURLY,
    description="Hourly: re-read the DARTS release when a file in its folder is new or changed.",
)
def darts_release(
    context: dg.SensorEvaluationContext,
    darts_source: DartsSourceResource,
    data_dir: DataDirResource,
):
    """One run per new state of the DARTS folder (footprint and coverage files)."""
    root = darts_source.root(data_dir.root)
    files = [p for p in root.glob("[!.]*") if p.suffix in (".parquet", ".gpkg")]
    if not files:
        return dg.SkipReason(f"no DARTS file in {root}")
    fingerprint = files_fingerprint(files)
    if fingerprint == context.cursor:
        return dg.SkipReason(f"the {len(files)} DARTS files in {root} are unchanged")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"darts-{fingerprint}")], cursor=fingerprint
    )


@dg.sensor(
    asset_selection=["alphaearth_statistics"],
    minimum_interval_seconds=DAILY,
    description="Daily: when the AlphaEarth source gains a year, re-run alphaearth_statistics "
    "if it was materialised (earlier years come from the cache); each level's "
    "alphaearth_features follows by automation.",
)
def alphaearth_years(
    context: dg.SensorEvaluationContext,
    earth_engine: EarthEngineResource,
    data_dir: DataDirResource,
):
    """Compare the source's years with the cursor (the years seen at the last tick)."""
    try:
        years = earth_engine.years(data_dir.root)
    except FileNotFoundError as err:  # offline, before the folder exists
        return dg.SkipReason(f"no AlphaEarth source yet: {err}")
    seen = set(json.loads(context.cursor)) if context.cursor else None
    cursor = json.dumps(years)
    if seen is None or set(years) <= seen:
        return dg.SensorResult(skip_reason=f"AlphaEarth years {years}: none new", cursor=cursor)
    added = sorted(set(years) - seen)
    if not context.instance.get_latest_materialization_event(dg.AssetKey("alphaearth_statistics")):
        return dg.SensorResult(
            skip_reason=f"AlphaEarth years {added} are new; alphaearth_statistics was never "
            "materialised, nothing to update",
            cursor=cursor,
        )
    context.log.info(f"AlphaEarth years {added} are new: alphaearth_statistics to update")
    run = dg.RunRequest(run_key=f"alphaearth-{max(years)}-{len(years)}")
    return dg.SensorResult(run_requests=[run], cursor=cursor)


#: Every sensor of the code location.
sensors = [era5_arctic_years, darts_release, alphaearth_years]
