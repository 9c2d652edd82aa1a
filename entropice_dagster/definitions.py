"""The one ``Definitions`` object of the code location (``workspace.yaml`` points here).

Paths and the area of interest come from the environment through ``Settings.from_env()``
(``ENTROPICE_DATA_DIR``, ``ENTROPICE_AOI``), the same settings the CLI uses.
``ENTROPICE_AUTOMATION=off`` starts the automation sensor stopped (it is on by default, so that
the demo instance updates downstream assets; switch it in the UI under Automation).
"""

import os

import dagster as dg

from entropice_core.config import Settings
from entropice_dagster.assets import all_assets
from entropice_dagster.jobs import era5_arctic_year, icechunk_maintenance, per_cell_assets
from entropice_dagster.resources import project_resources
from entropice_dagster.schedules import icechunk_maintenance_daily
from entropice_dagster.sensors import sensors

settings = Settings.from_env()
AUTOMATION = os.environ.get("ENTROPICE_AUTOMATION", "on")
if AUTOMATION.strip().lower() not in ("on", "off"):
    raise ValueError(f"ENTROPICE_AUTOMATION={AUTOMATION!r}: use 'on' (the default) or 'off'")

#: Evaluates every asset's automation condition (per-cell features after new Arctic years,
#: datasets, models, predictions and the leaderboard after their inputs change).
automation = dg.AutomationConditionSensorDefinition(
    "entropice_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED
    if AUTOMATION.strip().lower() == "off"
    else dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Requests the runs the assets' automation conditions ask for: downstream "
    "assets follow updated inputs (ENTROPICE_AUTOMATION=off: stopped by default).",
)

#: Steps run in the run's own process: a step process would import the definitions (and the
#: scientific stack) a second time, seconds per run; the heavy work inside a step goes to the
#: Dask resource or the libraries' own threads (benchmarks/dagster_runs.py).
defs = dg.Definitions(
    assets=all_assets,
    executor=dg.in_process_executor,
    jobs=[per_cell_assets, era5_arctic_year, icechunk_maintenance],
    schedules=[icechunk_maintenance_daily],
    sensors=[*sensors, automation],
    resources=project_resources(settings.data_dir, settings.aoi),
)
