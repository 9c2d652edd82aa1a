"""Assets, one module per pipeline stage."""

from entropice_dagster.assets.climate import (
    climate_features,
    era5_daily,
    era5_hourly,
    era5_yearly,
)
from entropice_dagster.assets.grids import grid_cells, watermask
from entropice_dagster.assets.labels import darts_polygons, rts_labels
from entropice_dagster.assets.terrain import terrain_features

all_assets = [watermask, grid_cells, darts_polygons, rts_labels, terrain_features]
all_assets += [era5_hourly, era5_daily, era5_yearly, climate_features]
