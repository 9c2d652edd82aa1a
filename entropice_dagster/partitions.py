"""Partition definitions shared by the asset graph.

One ``grid_level`` key is one (grid, level) pair such as ``h3_5``; ``GridSpec.from_key`` parses it.
A new grid or level is a new key here, never a new asset.
"""

import dagster as dg

from entropice_core.config import DEFAULT_GRID_LEVELS, config_dir_from_env
from entropice_core.ml.training import experiment_keys

grid_partitions = dg.StaticPartitionsDefinition(list(DEFAULT_GRID_LEVELS))

#: Experiment and dataset configs (<model>-<task>.toml, dataset.toml): ENTROPICE_CONFIG_DIR, or
#: the ones shipped in the package (the repository's configs/ links to them).
CONFIG_DIR = config_dir_from_env()
#: One key per experiment file: a new configs/<model>-<task>.toml is a new partition.
experiment_partitions = dg.StaticPartitionsDefinition(experiment_keys(CONFIG_DIR))
#: Trained models and predictions: one per grid level and experiment (key "espa-binary|h3_5").
model_partitions = dg.MultiPartitionsDefinition(
    {"grid_level": grid_partitions, "experiment": experiment_partitions}
)

#: The name of the dynamic partitions of Arctic years on the instance.
ARCTIC_YEAR = "arctic_year"
arctic_year_partitions = dg.DynamicPartitionsDefinition(name=ARCTIC_YEAR)
"""Arctic years (1 Oct Y-1 .. 30 Sep Y) keyed ``"Y"``, the year in which they end.

Dynamic because a year becomes a partition only once it has ended and ERA5 has published it:
the ``era5_arctic_years`` sensor adds the keys (time-window partitions would key a year by its
start). Add keys by hand in the UI or with ``instance.add_dynamic_partitions``.
"""
