"""The one ``Definitions`` object of the code location (``workspace.yaml`` points here).

Paths and the area of interest come from the environment through ``Settings.from_env()``
(``ENTROPICE_DATA_DIR``, ``ENTROPICE_AOI``), the same settings the CLI uses.
"""

import dagster as dg

from entropice_core.config import Settings
from entropice_dagster.assets import all_assets
from entropice_dagster.assets.grids import IO_MANAGER_KEY
from entropice_dagster.assets.labels import ZARR_IO_MANAGER_KEY
from entropice_dagster.io_managers import GeoParquetIOManager, ZarrIOManager
from entropice_dagster.jobs import per_cell_assets
from entropice_dagster.resources import (
    ArcticDEMSourceResource,
    AreaOfInterestResource,
    DartsSourceResource,
    DataDirResource,
    GridCellsResource,
    WatermaskResource,
)

settings = Settings.from_env()

defs = dg.Definitions(
    assets=all_assets,
    jobs=[per_cell_assets],
    resources={
        IO_MANAGER_KEY: GeoParquetIOManager(data_dir=str(settings.data_dir)),
        ZARR_IO_MANAGER_KEY: ZarrIOManager(data_dir=str(settings.data_dir)),
        "data_dir": DataDirResource(path=str(settings.data_dir)),
        "area_of_interest": AreaOfInterestResource(aoi=settings.aoi),
        "grid_settings": GridCellsResource(),
        "watermask_source": WatermaskResource(),
        "darts_source": DartsSourceResource(),
        "arcticdem_source": ArcticDEMSourceResource(),
    },
)
