#!/usr/bin/env bash
# Climate features: ERA5 download, daily aggregates and yearly indices of the Arctic years,
# then per-cell climate features for every grid level.
# Dagster: `dagster job backfill -j era5_arctic_year --all`, then climate_features
# (`dagster job backfill -j per_cell_assets --all`).
# Usage: scripts/03era5.sh [AOI] [YEAR...]   (default: sample, and the sample region's years)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
aoi="${1:-sample}"
shift || true
years=()
if (($# > 0)); then years=(--year "$@"); fi
echo "== era5 download, daily, yearly ${*:-(every year)}" >&2
"$ENTROPICE" era5 download --aoi "$aoi" "${years[@]}"
"$ENTROPICE" era5 daily "${years[@]}"
"$ENTROPICE" era5 yearly "${years[@]}"
for_each_level "$ENTROPICE" era5 features
