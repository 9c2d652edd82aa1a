#!/usr/bin/env bash
# Satellite embeddings: AlphaEarth features for every grid level.
# Dagster: alphaearth_features (`dagster job backfill -j per_cell_assets --all`).
# Usage: scripts/02alphaearth.sh [cogs|earthengine]   (default: cogs, the local COGs)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
source_kind="${1:-cogs}"
for_each_level "$ENTROPICE" alphaearth --source "$source_kind"
