"""Assets, one module per pipeline stage."""

from entropice_dagster.assets.alphaearth import alphaearth_features, alphaearth_statistics
from entropice_dagster.assets.climate import (
    climate_features,
    era5_daily,
    era5_hourly,
    era5_yearly,
)
from entropice_dagster.assets.grids import grid_cells, watermask
from entropice_dagster.assets.labels import darts_coverage, darts_polygons, rts_labels
from entropice_dagster.assets.models import (
    experiment_summary,
    predictions,
    trained_model,
    training_dataset,
)
from entropice_dagster.assets.terrain import (
    arcticdem_tiles,
    terrain_derivatives,
    terrain_features,
    terrain_statistics,
)

all_assets = [watermask, grid_cells, darts_polygons, darts_coverage, rts_labels]
all_assets += [arcticdem_tiles, terrain_derivatives, terrain_statistics, terrain_features]
all_assets += [training_dataset, trained_model, predictions, experiment_summary]
all_assets += [era5_hourly, era5_daily, era5_yearly, climate_features]
all_assets += [alphaearth_statistics, alphaearth_features]
