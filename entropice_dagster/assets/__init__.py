"""Assets, one module per pipeline stage."""

from entropice_dagster.assets.grids import grid_cells, watermask
from entropice_dagster.assets.labels import darts_polygons, rts_labels

all_assets = [watermask, grid_cells, darts_polygons, rts_labels]
