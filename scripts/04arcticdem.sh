#!/usr/bin/env bash
# Terrain features: ArcticDEM tiles, the derivative rasters (needs the water mask from
# 00grids.sh), then exact per-cell terrain statistics of every grid level in one pass.
# Dagster: arcticdem_tiles and terrain_derivatives, then terrain_statistics (all levels in
# one pass) and terrain_features (each level's part of it).
# Usage: scripts/04arcticdem.sh [AOI]   (default: sample)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
aoi="${1:-sample}"
echo "== terrain tiles, derivatives" >&2
"$ENTROPICE" terrain tiles --aoi "$aoi"
"$ENTROPICE" terrain derivatives
levels="$(echo $ENTROPICE_LEVELS | tr ' ' ',')"
echo "== terrain features --grid-level $levels (one pass)" >&2
if ! "$ENTROPICE" terrain features --grid-level "$levels"; then
  echo "$(basename "$0"): failed at terrain features of grid levels $levels" >&2
  exit 1
fi
