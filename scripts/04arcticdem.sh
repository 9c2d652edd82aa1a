#!/usr/bin/env bash
# Terrain features: ArcticDEM tiles, the derivative rasters (needs the water mask from
# 00grids.sh), then per-cell terrain statistics for every grid level.
# Dagster: arcticdem_tiles and terrain_derivatives, then terrain_features
# (`dagster job backfill -j per_cell_assets --all`).
# Usage: scripts/04arcticdem.sh [AOI]   (default: sample)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
aoi="${1:-sample}"
echo "== terrain tiles, derivatives" >&2
"$ENTROPICE" terrain tiles --aoi "$aoi"
"$ENTROPICE" terrain derivatives
for_each_level "$ENTROPICE" terrain features
