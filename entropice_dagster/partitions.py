"""Partition definitions shared by the asset graph.

One ``grid_level`` key is one (grid, level) pair such as ``h3_5``; ``GridSpec.from_key`` parses it.
A new grid or level is a new key here, never a new asset.
"""

import dagster as dg

from entropice_core.config import DEFAULT_GRID_LEVELS

grid_partitions = dg.StaticPartitionsDefinition(list(DEFAULT_GRID_LEVELS))
