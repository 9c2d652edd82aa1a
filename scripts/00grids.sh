#!/usr/bin/env bash
# Grid generation: the water mask, then the cells of every grid level.
# Dagster: the watermask and grid_cells assets (`dagster job backfill -j per_cell_assets --all`).
# Usage: scripts/00grids.sh [AOI]   (AOI as --aoi takes it; default: sample)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
aoi="${1:-sample}"
"$ENTROPICE" watermask "$aoi"
for_each_level "$ENTROPICE" grids --aoi "$aoi"
