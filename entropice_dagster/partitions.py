"""Partition definitions shared by the asset graph.

One ``grid_level`` key is one (grid, level) pair such as ``h3_5``; ``GridSpec.from_key`` parses it.
A new grid or level is a new key here, never a new asset.
"""

import dagster as dg

from entropice_core.config import DEFAULT_GRID_LEVELS

grid_partitions = dg.StaticPartitionsDefinition(list(DEFAULT_GRID_LEVELS))

arctic_year_partitions = dg.DynamicPartitionsDefinition(name="arctic_year")
"""Arctic years (1 Oct Y-1 .. 30 Sep Y) keyed ``"Y"``, the year in which they end.

Dynamic because a year becomes a partition only once it has ended and ERA5 has published it:
the ``era5_refresh`` schedule adds the keys (time-window partitions would key a year by its
start). Add keys by hand in the UI or with ``instance.add_dynamic_partitions``.
"""
