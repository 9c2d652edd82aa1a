#!/usr/bin/env bash
# Label extraction: the DARTS footprints (read once), then RTS labels for every grid level.
# Dagster: darts_polygons and rts_labels (`dagster job backfill -j per_cell_assets --all`).
# Usage: scripts/01darts.sh [AOI]   (AOI chooses the DARTS client: sample -> offline files)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
aoi="${1:-sample}"
for_each_level "$ENTROPICE" labels --aoi "$aoi"
