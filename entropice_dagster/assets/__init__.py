"""Assets, one module per pipeline stage."""

from entropice_dagster.assets.grids import grid_cells, watermask

all_assets = [watermask, grid_cells]
