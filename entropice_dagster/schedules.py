"""Schedules: the daily Icechunk maintenance (new source data comes in through ``sensors.py``)."""

import dagster as dg

from entropice_dagster.jobs import icechunk_maintenance

icechunk_maintenance_daily = dg.ScheduleDefinition(
    name="icechunk_maintenance_daily",
    job=icechunk_maintenance,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 UTC: expire old Icechunk snapshots (keeping the newest three) "
    "and delete chunks no kept snapshot needs.",
)
