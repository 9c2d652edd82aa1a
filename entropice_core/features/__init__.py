"""Per-cell features of each source on one grid level: ``terrain`` and ``climate``."""
