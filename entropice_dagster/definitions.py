"""The one ``Definitions`` object of the code location (``workspace.yaml`` points here).

Paths and the area of interest come from the environment through ``Settings.from_env()``
(``ENTROPICE_DATA_DIR``, ``ENTROPICE_AOI``), the same settings the CLI uses.
"""

import dagster as dg

from entropice_core.config import Settings
from entropice_dagster.assets import all_assets
from entropice_dagster.jobs import era5_arctic_year, icechunk_maintenance, per_cell_assets
from entropice_dagster.resources import project_resources
from entropice_dagster.schedules import era5_refresh, icechunk_maintenance_daily

settings = Settings.from_env()

defs = dg.Definitions(
    assets=all_assets,
    jobs=[per_cell_assets, era5_arctic_year, icechunk_maintenance],
    schedules=[era5_refresh, icechunk_maintenance_daily],
    resources=project_resources(settings.data_dir, settings.aoi),
)
