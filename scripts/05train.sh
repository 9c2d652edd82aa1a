#!/usr/bin/env bash
# Model training: the training dataset of every grid level, then every experiment on it and
# its predictions (an experiment's key is its file name, e.g. configs/espa-binary.toml).
# Dagster: training_dataset, trained_model and predictions (materialise them for every
# grid_level partition and every (grid_level, experiment) partition in the UI).
# Usage: scripts/05train.sh [CONFIG...]   (default: every experiment in configs/ but dataset.toml)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
if (($# > 0)); then
  configs=("$@")
else
  configs=()
  for config in "$_here"/../configs/*.toml; do
    [[ "$(basename "$config")" == dataset.toml ]] || configs+=("$config")
  done
fi
for_each_level "$ENTROPICE" dataset
for config in "${configs[@]}"; do
  for_each_level "$ENTROPICE" train --config "$config"
  for_each_level "$ENTROPICE" predict --experiment "$(basename "$config" .toml)"
done
