"""Assets, one module per pipeline stage."""

from entropice_dagster.assets.grids import grid_cells, watermask
from entropice_dagster.assets.labels import darts_polygons, rts_labels
from entropice_dagster.assets.terrain import arcticdem_tiles, terrain_derivatives, terrain_features

all_assets = [
    watermask,
    grid_cells,
    darts_polygons,
    rts_labels,
    arcticdem_tiles,
    terrain_derivatives,
    terrain_features,
]
