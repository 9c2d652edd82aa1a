"""Schedules: the yearly ERA5 refresh, and the daily Icechunk maintenance.

ERA5 (as ERA5T) appears on the CDS about 5 days after real time, so Arctic year Y (ending 30
September Y) is complete once 1 October Y 00 UTC, which closes 30 September's precipitation,
is out: from about 6 October Y. The schedule runs daily and advances one stage per tick, so a
missed or failed tick is caught up by the next one:

1. register every Arctic year up to the newest published one as a partition;
2. newest year Y without ``era5_yearly``: download, daily aggregates and indices of Y;
3. ``era5_yearly`` of Y - 1 computed before ``era5_daily`` of Y existed: recompute it (its
   thaw season, SON and autumn shoulder reach into October-December of Y);

``climate_features`` (partitioned by grid level, so outside this schedule's job) follows through
its automation condition: it is recomputed when an ``era5_yearly`` partition is updated.
"""

import datetime as dt

import dagster as dg

from entropice_core.ingest.era5 import latest_published_arctic_year
from entropice_dagster.jobs import era5_arctic_year, icechunk_maintenance
from entropice_dagster.partitions import ARCTIC_YEAR

#: First Arctic year registered by the schedule (the architecture's partitions start in 2000).
FIRST_ARCTIC_YEAR = 2000
ERA5_ASSETS = ("era5_hourly", "era5_daily", "era5_yearly")


def _materialized_at(instance: dg.DagsterInstance, asset: str, partition: str) -> float | None:
    """Timestamp of the latest materialisation of one partition, None if never."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0].timestamp if records else None


def refresh_requests(
    instance: dg.DagsterInstance, now: dt.datetime, first_year: int = FIRST_ARCTIC_YEAR
) -> list[dg.RunRequest] | dg.SkipReason:
    """The run requests of one tick at ``now`` (see the module docstring)."""
    year = latest_published_arctic_year(now)
    keys = [str(y) for y in range(first_year, year + 1)]
    known = set(instance.get_dynamic_partitions(ARCTIC_YEAR))
    if missing := [k for k in keys if k not in known]:
        instance.add_dynamic_partitions(ARCTIC_YEAR, missing)
    newest = _materialized_at(instance, "era5_yearly", str(year))
    if newest is None:
        return [
            dg.RunRequest(
                run_key=f"era5-{year}",
                asset_selection=[dg.AssetKey(a) for a in ERA5_ASSETS],
                partition_key=str(year),
            )
        ]
    previous = _materialized_at(instance, "era5_yearly", str(year - 1))
    daily = _materialized_at(instance, "era5_daily", str(year))
    if previous is not None and daily is not None and previous < daily:
        return [
            dg.RunRequest(
                run_key=f"era5-yearly-{year - 1}-after-{daily:.0f}",
                asset_selection=[dg.AssetKey("era5_yearly")],
                partition_key=str(year - 1),
            )
        ]
    return dg.SkipReason(f"Arctic year {year} and its dependents are up to date")


@dg.schedule(
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    target=era5_arctic_year,
    description="Daily at 06 UTC: materialise the newest Arctic year once ERA5 has published "
    "it (about 6 October), then complete the previous year's thaw season.",
)
def era5_refresh(context: dg.ScheduleEvaluationContext):
    """Advance the ERA5 refresh by one stage (see ``refresh_requests``)."""
    return refresh_requests(context.instance, context.scheduled_execution_time)


icechunk_maintenance_daily = dg.ScheduleDefinition(
    name="icechunk_maintenance_daily",
    job=icechunk_maintenance,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 UTC: expire old Icechunk snapshots (keeping the newest three) "
    "and delete chunks no kept snapshot needs.",
)
