"""Climate indices and per-cell climate features from ERA5."""
